"""pytest plugin of the test kit (loaded by the suite's `-p gateway.testing.pytest_plugin`).

* the `browser` fixture: headless system Chromium (see `gateway.testing.browser`);
* the `browser` marker, put on every test that uses the fixture, so `pytest -m "not
  browser"` leaves them out;
* tests marked `postgres` need the server GATEWAY_TEST_POSTGRES_URL names.

Tests that need something this machine lacks are not run, and the run says so in ONE line
of the summary (what is missing and how to get it) instead of a skip line per test. Under
CI (CI=true) they run anyway and fail, because CI is where they must run.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
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
    if in_ci():
        return
    if browser_tests:
        _leave_out(config, items, browser_tests, "browser", missing)
    postgres_tests = [item for item in items if item.get_closest_marker("postgres")]
    if postgres_tests:
        _leave_out(config, items, postgres_tests, "PostgreSQL", postgres_missing)


def postgres_missing() -> str | None:
    from gateway.testing.postgres import ENV, EXAMPLE, problem

    found = problem()
    return None if found is None else f"{found}; set {ENV}={EXAMPLE} to run them"


def _leave_out(
    config: pytest.Config,
    items: list[pytest.Item],
    needing: list[pytest.Item],
    what: str,
    check: Callable[[], str | None],
) -> None:
    """Deselect `needing` when `check` names something missing, with one summary line."""
    found = check()
    if found is None:
        return
    config.hook.pytest_deselected(items=needing)
    left_out = set(map(id, needing))
    items[:] = [item for item in items if id(item) not in left_out]
    config.stash[_NOT_RUN].append(f"{len(needing)} {what} test(s): {found}")


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
