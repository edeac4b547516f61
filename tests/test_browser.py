"""The browser-test helper itself: headless system Chromium opens a page served on loopback."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from gateway.testing.process import serve

if TYPE_CHECKING:
    from playwright.async_api import Browser

pytestmark = pytest.mark.anyio

PAGE = """<!doctype html><html lang="en"><head><title>Helper check</title></head><body>
<label for="name">Name</label><input id="name">
<button id="go" onclick="document.getElementById('out').textContent =
  'Hello, ' + document.getElementById('name').value">Greet</button>
<p id="out" role="status"></p></body></html>"""


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


async def test_chromium_opens_a_loopback_page_and_runs_its_script(browser: Browser) -> None:
    async with serve(Starlette(routes=[Route("/", page)])) as url:
        tab = await browser.new_page()
        await tab.goto(url)
        assert await tab.title() == "Helper check"
        await tab.get_by_label("Name").fill("Ivan")
        await tab.keyboard.press("Tab")
        await tab.keyboard.press("Enter")
        assert await tab.get_by_role("status").text_content() == "Hello, Ivan"
