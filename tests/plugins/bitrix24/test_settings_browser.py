"""The connector's settings page in a real browser (headless Chromium), opened as Bitrix24
opens it: a form POST carrying the admin's AUTH_ID, in the portal's language. The admin
links a GREEN-API number that waits for its QR code, sees the code renew while waiting
(the fake renews it every 20 s of its clock), scans it, and sees the number connected
without reloading; in Russian and in English.

The gateway is served by uvicorn on loopback; the browser believes it is at its public
https URL (requests there are forwarded), and nothing else is reachable (Bitrix24's JS SDK
is refused: the page must work without it).
`GATEWAY_SCREENSHOTS=docs/images` keeps the screenshots docs/bitrix24.md shows.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from gateway_bitrix24.provider import Bitrix24Provider
from gateway_fakes.bitrix24 import FakePortal
from gateway_fakes.greenapi import FakeGreenApi

from gateway.testing import ToGateway, running_gateway
from gateway.testing.fake_common import ManualClock

from .support import PUBLIC

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page, Route

    from gateway.testing import GatewayHarness

pytestmark = pytest.mark.anyio

TEXTS = {
    "en": {"link": "Link", "qr": "needs the QR code scanned", "connected": "connected"},
    "ru": {"link": "Подключить", "qr": "нужно отсканировать QR-код", "connected": "подключён"},
}
PHONE = "+7 987 654-32-10"


def settings(tmp_path: Path, portal: FakePortal) -> dict[str, Any]:
    return {
        "public_url": PUBLIC,
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "admin": {"token": "admin-secret"},
        "workers": {"poll_interval": 0.05},
        "channels": {
            "wa_green": {
                "provider": "greenapi",
                "api_url": "https://api.green-api.test",
                "id_instance": "1101000001",
                "api_token": "fake0green0api0token",
                "webhook_token": "green-hook-token-0123456789",
            }
        },
        "crms": {
            "b24": {
                "provider": "bitrix24",
                "client_id": portal.client_id,
                "client_secret": portal.client_secret,
            }
        },
    }


async def snap(page: Page, name: str, tmp_path: Path) -> None:
    folder = os.environ.get("GATEWAY_SCREENSHOTS") or os.environ.get("GATEWAY_CONSOLE_SCREENSHOTS")
    target = Path(folder) if folder else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(target / f"bitrix24-{name}.png"), full_page=True)


async def only_the_gateway(context: BrowserContext, h: GatewayHarness) -> None:
    """Requests to the public URL reach the served gateway; anything else is refused."""
    assert h.url is not None
    served = h.url.rstrip("/")
    from playwright.async_api import Error as PlaywrightError

    async def forward(route: Route) -> None:
        url = route.request.url
        if not url.startswith(PUBLIC):
            await route.abort()
            return
        try:
            response = await route.fetch(url=served + url[len(PUBLIC) :])
        except PlaywrightError:  # the gateway stopped while the page still asked
            await route.abort()
            return
        await route.fulfill(response=response)

    await context.route("**/*", forward)


async def open_as_bitrix24(page: Page, portal: FakePortal, line: int) -> None:
    """Bitrix24 opens the handler with a form POST into its frame; here into the tab."""
    url, form = portal.connector_settings_frame(line)
    fields = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in form.items()
    )
    await page.set_content(
        f'<form id="open" method="post" action="{html.escape(url)}">{fields}</form>'
    )
    async with page.expect_navigation():
        await page.locator("#open").evaluate("form => form.submit()")


@pytest.mark.parametrize("language", ["en", "ru"])
async def test_link_a_number_watch_its_qr_renew_and_see_it_connect(
    browser: Browser, tmp_path: Path, language: str
) -> None:
    words = TEXTS[language]
    clock = ManualClock()
    green = FakeGreenApi(state="notAuthorized", me="79876543210", clock=clock)
    portal = FakePortal(installed=False)
    portal.app_record.language_id = language
    apps = {
        "api.green-api.test": green.app,
        "acme.bitrix24.com": portal.app,
        "oauth.bitrix.info": portal.oauth_app,
    }
    async with running_gateway(settings(tmp_path, portal), apps=apps, serve_http=True) as h:
        assert h.url is not None
        portal.http = httpx.AsyncClient(transport=ToGateway(httpx.URL(PUBLIC).host, target=h.url))
        await portal.install(f"{PUBLIC}/webhooks/b24/install")
        portal.finish_install()
        provider = h.gateway.instances["b24"]
        assert isinstance(provider, Bitrix24Provider)
        provider.settings_page.poll_seconds = 0.2  # the admin's wait, shortened

        context = await browser.new_context(viewport={"width": 900, "height": 640})
        await only_the_gateway(context, h)
        page = await context.new_page()
        await open_as_bitrix24(page, portal, line=1)
        row = page.locator('tr[data-channel="wa_green"]')
        await row.get_by_text(words["qr"]).wait_for()
        await row.get_by_text("GREEN-API", exact=True).wait_for()

        await row.get_by_role("button", name=words["link"]).click()
        await page.locator('p.notice[role="status"]', has_text="wa_green").wait_for()
        qr = page.locator("img.qr")
        first = await qr.get_attribute("src")
        assert first and first.startswith("data:image/png;base64,")
        await snap(page, f"settings-qr-{language}", tmp_path)

        clock.advance(21)  # the provider renews its QR code; the page shows the new one
        await page.wait_for_function(
            "old => { const img = document.querySelector('img.qr'); "
            "return img !== null && img.src !== old; }",
            arg=first,
        )

        green.scan_qr()  # the phone scans it: connected, shown without a reload
        connected = page.locator('tr[data-channel="wa_green"][data-state="connected"]')
        await connected.wait_for()
        await connected.get_by_text(PHONE).wait_for()
        await connected.get_by_text("GREEN-API · wa_green").wait_for()
        await connected.locator(".state").get_by_text(words["connected"], exact=True).wait_for()
        await page.locator('#live[data-poll="0"]').wait_for(state="attached")  # stopped asking
        assert await qr.count() == 0
        await snap(page, f"settings-connected-{language}", tmp_path)
        await context.close()
        await portal.http.aclose()


async def test_without_javascript_the_buttons_do_the_same(browser: Browser, tmp_path: Path) -> None:
    clock = ManualClock()
    green = FakeGreenApi(state="notAuthorized", me="79876543210", clock=clock)
    portal = FakePortal(installed=False)
    apps = {
        "api.green-api.test": green.app,
        "acme.bitrix24.com": portal.app,
        "oauth.bitrix.info": portal.oauth_app,
    }
    async with running_gateway(settings(tmp_path, portal), apps=apps, serve_http=True) as h:
        assert h.url is not None
        portal.http = httpx.AsyncClient(transport=ToGateway(httpx.URL(PUBLIC).host, target=h.url))
        await portal.install(f"{PUBLIC}/webhooks/b24/install")
        portal.finish_install()
        context = await browser.new_context(java_script_enabled=False)
        await only_the_gateway(context, h)
        page = await context.new_page()
        await open_as_bitrix24(page, portal, line=1)
        await page.get_by_role("button", name="Link").click()
        await page.get_by_text("Linked wa_green to this open line.").wait_for()
        assert await page.locator('#live[data-poll="1"]').count() == 1  # nothing asks, though

        # Who gets the alerts, set on the line's settings page.
        await page.get_by_label("Who is notified in Bitrix24").fill("1, 27")
        await page.get_by_role("button", name="Save").click()
        await page.get_by_text("Saved: alerts go to users 1, 27.").wait_for()
        assert await page.get_by_label("Who is notified in Bitrix24").input_value() == "1, 27"

        green.scan_qr()
        await page.get_by_role("button", name="Refresh").click()
        await page.locator('tr[data-state="connected"]').get_by_text(PHONE).wait_for()
        await context.close()
        await portal.http.aclose()
