"""Built-in WhatsApp Cloud API (Meta) channel plugin for WhatsChat Gateway."""

from __future__ import annotations

from collections.abc import Callable

from gateway import Provider, hookimpl
from gateway_cloudapi.provider import CloudApiProvider


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(CloudApiProvider)
