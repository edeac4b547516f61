"""Built-in Bitrix24 Open Lines plugin for WhatsChat Gateway (see docs/bitrix24.md)."""

from __future__ import annotations

from collections.abc import Callable

from gateway import Provider, hookimpl

from .provider import Bitrix24Provider


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(Bitrix24Provider)
