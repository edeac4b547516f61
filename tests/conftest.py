"""Shared test fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, the loop the gateway runs on in production."""
    return "asyncio"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The chaos scenarios run for minutes on purpose: they get longer than the suite's
    per-test `timeout` (pyproject.toml), still bounded."""
    if not items or not items[0].config.pluginmanager.hasplugin("timeout"):
        return  # a venv from before pytest-timeout joined the test extra
    for item in items:
        if item.get_closest_marker("chaos") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(1200))
