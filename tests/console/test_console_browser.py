"""The console in a real browser (headless Chromium): sign in, see a parked message and its
reason, replay it and watch it arrive, sign out; a wrong token and a cross-site post are
refused.

`GATEWAY_CONSOLE_SCREENSHOTS=docs/images` keeps the screenshots the README shows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from gateway.testing import Recorder, running_gateway
from gateway.testing.process import serve

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = pytest.mark.anyio

ADMIN = "console-admin-token"
CHANNEL_AUTH = {"Authorization": "Bearer wa-token"}


def settings(tmp_path: Path) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "admin": {"token": ADMIN},
        "retry": {"base_delay": 0.01, "max_delay": 0.05, "max_attempts": 2, "jitter": 0.0},
        "workers": {"poll_interval": 0.05},
        "channels": {
            "wa": {
                "provider": "test-channel",
                "base_url": "http://channel.test",
                "token": "wa-token",
            }
        },
        "crms": {
            "crm": {"provider": "test-crm", "base_url": "http://crm.test", "token": "crm-token"}
        },
        "routes": {"main": {"channel": "wa", "crm": "crm"}},
    }


async def snap(page: Page, name: str, tmp_path: Path) -> None:
    folder = os.environ.get("GATEWAY_CONSOLE_SCREENSHOTS")
    target = Path(folder) if folder else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(target / f"console-{name}.png"), full_page=True)


async def test_sign_in_see_the_parked_message_replay_it_and_sign_out(
    browser: Browser, tmp_path: Path
) -> None:
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    crm.fail_next(2, status=502)
    apps = {"channel.test": channel.app, "crm.test": crm.app}
    async with running_gateway(settings(tmp_path), apps=apps, serve_http=True) as h:
        message = {
            "id": "m-1",
            "chat": "79990001122",
            "from": "79990001122",
            "name": "Ann",
            "text": "<b>where is my order?</b>",
        }
        await h.client.post("/webhooks/wa", json={"messages": [message]}, headers=CHANNEL_AUTH)
        await h.observer.wait_for("dead_lettered")

        page = await (await browser.new_context(viewport={"width": 1280, "height": 800})).new_page()
        await page.goto(f"{h.url}/console/parked")
        assert page.url.endswith("/console/signin")  # not signed in: sent to sign in

        await page.get_by_label("Admin token").fill("not-the-token")
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_text("That is not the admin token.").wait_for()

        await page.get_by_label("Admin token").fill(ADMIN)
        await snap(page, "signin", tmp_path)
        await page.keyboard.press("Enter")
        await page.get_by_role("heading", name="Overview").wait_for()
        await snap(page, "overview", tmp_path)

        await page.get_by_role("link", name="Parked messages").click()
        row = page.locator("table.parked tbody tr")
        await row.first.wait_for()
        assert await row.count() == 1
        reason = await row.locator("td.reason").text_content()
        assert reason is not None and "gave up after 2 attempts" in reason
        await snap(page, "parked", tmp_path)

        await page.get_by_role("button", name="Replay 1", exact=True).click()
        await page.get_by_role("status").get_by_text("Replayed 1 message.").wait_for()
        await crm.wait_count(1)
        assert crm.texts() == ["<b>where is my order?</b>"]
        await snap(page, "replayed", tmp_path)

        # Trace it: from the replay notice to the new job, then by the customer's number.
        await page.get_by_role("link", name="replayed job 1 as job 2").click()
        await page.get_by_role("heading", name="Trace a message", exact=True).wait_for()
        new_job = page.locator("section.trace-job", has_text="job 2 (send) to crm")
        await new_job.get_by_text("delivered; id at the destination:").wait_for()
        await page.get_by_label("Phone number or message id").fill("+7 999 000-11-22")
        await page.get_by_role("button", name="Trace").click()
        await page.get_by_text("webhook of wa received").wait_for()
        old_job = page.locator("section.trace-job", has_text="job 1 (send) to crm")
        for step in (
            "queued",
            "attempt 1 started",
            "attempt failed, will retry: 502",
            "parked: gave up after 2 attempts",
            "replayed as job 2",
        ):
            await old_job.get_by_text(step).first.wait_for()
        await new_job.get_by_text("replays job 1").wait_for()
        await snap(page, "trace", tmp_path)
        await page.get_by_role("link", name="Overview").click()
        await page.get_by_role("img", name="Traffic and queue, last 6 hours").wait_for()
        await snap(page, "overview", tmp_path)

        await page.get_by_role("button", name="Sign out").click()
        await page.get_by_text("You are signed out.").wait_for()
        await page.goto(f"{h.url}/console/parked")
        assert page.url.endswith("/console/signin")


async def test_a_cross_site_post_is_refused(browser: Browser, tmp_path: Path) -> None:
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    crm.fail_next(2, status=502)
    apps = {"channel.test": channel.app, "crm.test": crm.app}
    async with running_gateway(settings(tmp_path), apps=apps, serve_http=True) as h:
        await h.client.post(
            "/webhooks/wa",
            json={"messages": [{"id": "m-1", "chat": "c1", "from": "c1", "text": "hi"}]},
            headers=CHANNEL_AUTH,
        )
        await h.observer.wait_for("dead_lettered")
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(f"{h.url}/console/signin")
        await page.get_by_label("Admin token").fill(ADMIN)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("heading", name="Overview").wait_for()

        # Another origin's page posts a replay form to the console in the signed-in browser.
        evil = f"""<!doctype html><title>evil</title><form id="f" method="post"
            action="{h.url}/console/parked/replay"><input name="mode" value="window">
            <input name="since" value="2000-01-01T00:00"></form>
            <script>document.getElementById('f').submit()</script>"""

        async def attack(_request: Request) -> HTMLResponse:
            return HTMLResponse(evil)

        async with serve(Starlette(routes=[Route("/", attack)])) as other:
            async with page.expect_response(f"{h.url}/console/parked/replay") as answer:
                await page.goto(other)
            assert (await answer.value).status == 403
        await page.get_by_text("CSRF").wait_for()
        # Same origin but without the form's CSRF token: refused as well.
        bare = await context.request.post(
            f"{h.url}/console/parked/replay", form={"mode": "window", "since": "2000-01-01T00:00"}
        )
        assert bare.status == 403
        assert len(await h.gateway.store.dead_letters()) == 1
        assert crm.texts() == []
