"""Example plugin: a Telegram-Bot-API-like channel (see docs/plugins.md)."""

from collections.abc import Callable

from gateway import Provider, hookimpl
from gateway_telegramlike.provider import TelegramLikeChannel


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(TelegramLikeChannel)
