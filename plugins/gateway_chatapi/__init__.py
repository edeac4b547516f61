"""Built-in Chat API channel plugin for WhatsChat Gateway (`provider = "chatapi"`)."""

from __future__ import annotations

from collections.abc import Callable

from gateway import Provider, hookimpl
from gateway_chatapi.provider import ChatApiChannel


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(ChatApiChannel)
