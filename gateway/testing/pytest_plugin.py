"""pytest plugin of the test kit (loaded by the suite's `-p gateway.testing.pytest_plugin`).

* the `browser` fixture: headless system Chromium (see `gateway.testing.browser`);
* the `browser` marker, put on every test that uses the fixture, so `pytest -m "not
  browser"` leaves them out.

Tests that need something this machine lacks are not run, and the run says so in ONE line
of the summary (what is missing and how to get it) instead of a skip line per test. Under
CI (CI=true) they run anyway and fail, because CI is where they must run.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from gateway.testing.browser import launch, missing

if TYPE_CHECKING:
    from playwright.async_api import Browser

_NOT_RUN = pytest.StashKey[list[str]]()


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives headless Chromium (Debian's chromium + Playwright)"
    )
    config.stash[_NOT_RUN] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    browser_tests = [item for item in items if "browser" in getattr(item, "fixturenames", ())]
    for item in browser_tests:
        item.add_marker(pytest.mark.browser)
    if not browser_tests or in_ci():
        return
    problem = missing()
    if problem is None:
        return
    config.hook.pytest_deselected(items=browser_tests)
    kept = set(map(id, browser_tests))
    items[:] = [item for item in items if id(item) not in kept]
    config.stash[_NOT_RUN].append(f"{len(browser_tests)} browser test(s): {problem}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in terminalreporter.config.stash.get(_NOT_RUN, []):
        terminalreporter.write_line(f"not run: {line}", yellow=True)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium for this test (closed after it)."""
    problem = missing()
    if problem is not None:
        if in_ci():
            pytest.fail(f"browser tests must run in CI: {problem}")
        pytest.skip(problem)
    async with launch() as started:
        yield started
