"""A real browser for tests: Debian's Chromium driven by Playwright, no browser download.

    @pytest.mark.browser
    async def test_page(browser: Browser) -> None:
        page = await browser.new_page()
        await page.goto(url)

Playwright cannot fetch its own browser builds here, so it drives the system Chromium
(`/usr/bin/chromium`, or `GATEWAY_TEST_CHROMIUM`) through `executable_path`. Without
Chromium or Playwright the tests that ask for a browser are skipped with one line that says
how to get them; under CI (CI=true) they fail instead, because CI is where they must run
(`.ci/run` installs both).

The pytest fixtures live in `gateway.testing.pytest_plugin` (a pytest plugin the test
suite loads); this module itself does not import pytest, so a script can use `launch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.async_api import Browser

ENV = "GATEWAY_TEST_CHROMIUM"
DEFAULT = "/usr/bin/chromium"

#: Headless, sandbox-less (CI runs as root), and silent on the network: no update checks,
#: no sync, no QUIC, nothing but the pages a test opens.
ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def chromium_path() -> str | None:
    """The Chromium executable to drive, or None when there is none."""
    configured = os.environ.get(ENV)
    if configured:
        return configured if Path(configured).exists() else None
    if Path(DEFAULT).exists():
        return DEFAULT
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing() -> str | None:
    """Why no browser test can run here (None when they can), with how to fix it."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: pip install -e '.[test]'"
    if chromium_path() is None:
        return (
            f"Chromium not found at {DEFAULT} (or ${ENV}): apt-get install chromium "
            "to run the browser tests"
        )
    return None


@contextlib.asynccontextmanager
async def launch() -> AsyncIterator[Browser]:
    """Start headless Chromium; closed (with Playwright's driver) on exit."""
    from playwright.async_api import async_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError(missing() or "Chromium not found")
    manager = async_playwright()
    playwright = await manager.__aenter__()
    try:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=list(ARGS), headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()
    finally:
        await manager.__aexit__(None, None, None)
        await _close_driver(manager)


async def _close_driver(manager: object) -> None:
    """Close the Playwright driver's subprocess transport while the loop still runs.

    Playwright waits for its driver to exit but leaves the asyncio transport open; were it
    collected after the test's event loop closed, its `__del__` would fail ("Event loop is
    closed") and pytest, which treats such unraisable errors as failures here, would fail
    the run at its very end. The attributes are Playwright's own: where they differ (another
    release), nothing is done.
    """
    client = getattr(manager, "_client", None)
    process = getattr(getattr(client, "_transport", None), "_proc", None)
    if not isinstance(process, asyncio.subprocess.Process):
        return
    await process.wait()
    transport = getattr(process, "_transport", None)
    if isinstance(transport, asyncio.SubprocessTransport):
        transport.close()
