"""Built-in GREEN-API channel plugin for WhatsChat Gateway (`provider = "greenapi"`)."""

from __future__ import annotations

from collections.abc import Callable

from gateway import Provider, hookimpl
from gateway_greenapi.provider import GreenApiProvider


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(GreenApiProvider)
