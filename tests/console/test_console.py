"""The console over HTTP (no browser): cookies, CSRF, refusals, escaping and languages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.console import session as sessions
from gateway.testing import Recorder, running_gateway

pytestmark = pytest.mark.anyio

ADMIN = "console-admin-token"


def settings(tmp_path: Path, **top: Any) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "admin": {"token": ADMIN},
        "retry": {"base_delay": 0.01, "max_delay": 0.05, "max_attempts": 1, "jitter": 0.0},
        "workers": {"poll_interval": 0.05},
        "channels": {
            "wa": {"provider": "test-channel", "base_url": "http://channel.test", "token": "wa"}
        },
        "crms": {"crm": {"provider": "test-crm", "base_url": "http://crm.test", "token": "crm"}},
        "routes": {"main": {"channel": "wa", "crm": "crm"}},
        **top,
    }


async def sign_in(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post("/console/signin", data={"token": ADMIN})


def csrf_of(page: str) -> str:
    marker = 'name="csrf" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


async def test_the_session_cookie_is_httponly_strict_and_secure_behind_https(
    tmp_path: Path,
) -> None:
    async with running_gateway(settings(tmp_path, public_url="https://gw.example.com")) as h:
        answer = await sign_in(h.client)
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"]
        assert f"{sessions.COOKIE}=" in cookie
        for flag in ("HttpOnly", "SameSite=strict", "Secure", "Path=/console"):
            assert flag.lower() in cookie.lower(), cookie
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


async def test_plain_http_public_url_gives_a_cookie_without_secure(tmp_path: Path) -> None:
    async with running_gateway(settings(tmp_path)) as h:
        cookie = (await sign_in(h.client)).headers["set-cookie"]
        assert "secure" not in cookie.lower()


async def test_pages_need_a_session_and_a_wrong_token_is_refused(tmp_path: Path) -> None:
    async with running_gateway(settings(tmp_path)) as h:
        assert (await h.client.get("/console/")).headers["location"] == "/console/signin"
        wrong = await h.client.post("/console/signin", data={"token": "guess"})
        assert wrong.status_code == 401
        assert "That is not the admin token." in wrong.text
        forged = {sessions.COOKIE: "eyJuIjoiYSIsImUiOjFlMTB9.deadbeef"}
        h.client.cookies.update(forged)
        assert (await h.client.get("/console/")).status_code == 303


async def test_posts_need_the_csrf_token_and_sign_out_kills_the_cookie(tmp_path: Path) -> None:
    async with running_gateway(settings(tmp_path)) as h:
        await sign_in(h.client)
        page = await h.client.get("/console/routes")
        assert page.status_code == 200
        token = csrf_of(page.text)
        link = {"name": "extra", "channel": "wa", "crm": "crm", "direction": "both"}
        refused = await h.client.post("/console/routes/link", data=link)
        assert refused.status_code == 403
        cross = await h.client.post(
            "/console/routes/link",
            data={**link, "csrf": token},
            headers={"Origin": "http://evil.example"},
        )
        assert cross.status_code == 403
        linked = await h.client.post("/console/routes/link", data={**link, "csrf": token})
        assert linked.headers["location"] == "/console/routes?notice=linked&name=extra"
        assert "extra" in h.gateway.route_table.mapping()
        stolen = dict(h.client.cookies)
        await h.client.post("/console/signout", data={"csrf": token})
        h.client.cookies.clear()
        h.client.cookies.update(stolen)  # a copy of the cookie taken before signing out
        assert (await h.client.get("/console/routes")).status_code == 303


async def test_the_console_is_closed_without_an_admin_token(tmp_path: Path) -> None:
    async with running_gateway(settings(tmp_path, admin={})) as h:
        page = await h.client.get("/console/signin")
        assert "The console is closed" in page.text
        assert (await h.client.post("/console/signin", data={"token": ""})).status_code == 401


async def test_customer_text_is_escaped_and_russian_is_spoken(tmp_path: Path) -> None:
    crm = Recorder(name="crm")
    crm.fail_next(1, status=400)
    apps = {"channel.test": Recorder(name="channel").app, "crm.test": crm.app}
    async with running_gateway(settings(tmp_path), apps=apps) as h:
        evil = "<script>alert(1)</script>"
        await h.client.post(
            "/webhooks/wa",
            json={"messages": [{"id": "m1", "chat": evil, "from": "x", "text": "t"}]},
            headers={"Authorization": "Bearer wa"},
        )
        await h.observer.wait_for("dead_lettered")
        await sign_in(h.client)
        page = await h.client.get("/console/parked?lang=ru")
        assert "Отложенные сообщения" in page.text
        assert evil not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "gateway_console_lang=ru" in page.headers["set-cookie"]


def test_every_text_a_template_uses_is_in_the_catalogue() -> None:
    import re
    from importlib import resources

    from gateway.console.texts import CATALOGUE, KEYS

    templates = resources.files("gateway.console").joinpath("templates")
    used = {
        key
        for page in templates.iterdir()
        if page.name.endswith(".html")
        for key in re.findall(r"\btn?\(\s*[\"']([a-z_.]+)[\"']", page.read_text("utf-8"))
    }
    used = {key for key in used if not key.endswith(".")}  # "origin." ~ name: both listed
    nav = {"nav.overview", "nav.routes", "nav.parked", "nav.trace", "nav.plugins"}
    assert used | nav <= set(KEYS)
    for language in ("en", "ru"):
        assert set(KEYS) <= set(CATALOGUE.message_ids(language)), language


async def test_the_overview_shows_routes_to_a_portal_that_is_not_installed(
    tmp_path: Path,
) -> None:
    """`/readyz` is about this process; what needs a person, such as a route to a portal
    the app is not installed on, is on the console's overview (as in `gateway status`)."""
    b24 = {"provider": "bitrix24", "client_id": "local.abc", "client_secret": "s" * 32}
    routes = {"main": {"channel": "wa", "crm": "b24", "target": "0123abcd/1"}}
    async with running_gateway(settings(tmp_path, crms={"b24": b24}, routes=routes)) as h:
        await sign_in(h.client)
        page = await h.client.get("/console/")
        assert page.status_code == 200
        assert "Needs attention" in page.text
        assert "route main: the app is not installed on portal 0123abcd" in page.text
        assert "b24: not installed on any Bitrix24 portal yet" in page.text
        ru = await h.client.get("/console/?lang=ru")
        assert "Требует внимания" in ru.text


async def test_the_overview_says_when_nothing_needs_attention(tmp_path: Path) -> None:
    async with running_gateway(settings(tmp_path)) as h:
        await sign_in(h.client)
        page = await h.client.get("/console/")
        assert "Nothing needs attention." in page.text


async def test_unrouted_messages_show_their_reason_and_wait_again(tmp_path: Path) -> None:
    """Messages no route carries: listed with why and since when; those that waited too
    long can wait again, one by one or all (as POST /admin/unrouted/replay)."""
    unlinked = settings(tmp_path, routes={})
    async with running_gateway(unlinked) as h:
        for n in (1, 2):
            body = {"messages": [{"id": f"m{n}", "chat": f"c{n}", "text": f"m{n}"}]}
            answer = await h.client.post(
                "/webhooks/wa", json=body, headers={"Authorization": "Bearer wa"}
            )
            assert answer.status_code == 200, answer.text
        await sign_in(h.client)
        overview = await h.client.get("/console/")
        assert "2 message(s) held because no route carries them" in overview.text
        page = await h.client.get("/console/unrouted")
        assert page.text.count("no route carries it") == 2
        assert "No unrouted message has been set aside." in page.text
        store = h.gateway.store
        expired = await store.expire_held(h.gateway.clock() + 1, "held too long", h.gateway.clock())
        assert len(expired) == 2
        page = await h.client.get("/console/unrouted")
        assert "held too long" in page.text and "No message is waiting" in page.text
        token = csrf_of(page.text)
        first = expired[0].id
        again = await h.client.post(
            "/console/unrouted/replay", data={"csrf": token, "id": str(first)}
        )
        assert again.headers["location"] == "/console/unrouted?notice=held&n=1"
        assert [m.id for m in await store.held()] == [first]
        nothing = await h.client.post("/console/unrouted/replay", data={"csrf": token})
        assert "problem=selection" in nothing.headers["location"]
        everything = await h.client.post(
            "/console/unrouted/replay", data={"csrf": token, "all": "1"}
        )
        assert everything.headers["location"].endswith("n=1")
        assert await store.held(dead=True) == []
        ru = await h.client.get("/console/unrouted?lang=ru")
        assert "Сообщения без маршрута" in ru.text


def _luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(fg: str, bg: str) -> float:
    light, dark = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_text_colours_meet_wcag_aa_on_every_background_they_are_used_on() -> None:
    import re
    from importlib.resources import files

    css = (files("gateway.console") / "static" / "console.css").read_text()
    palette = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-f]{6})", css))
    backgrounds = ["#ffffff", palette["bg-soft"], "#eef7f0", "#fbeeee"]
    for name in ("fg", "muted", "accent", "bad", "ok"):
        for background in backgrounds:
            ratio = _contrast(palette[name], background)
            assert ratio >= 4.5, f"--{name} on {background}: {ratio:.2f}"
    assert _contrast("#ffffff", palette["accent"]) >= 4.5  # button text


async def test_every_control_on_every_page_has_a_name(tmp_path: Path) -> None:
    """Labels for keyboard and screen-reader users: every visible input, select and button
    on every page is named (a <label for>, aria-label, or its own text)."""
    from html.parser import HTMLParser

    class Controls(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.labelled: set[str] = set()
            self.controls: list[dict[str, str | None]] = []
            self.button: dict[str, str | None] | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found = dict(attrs)
            if tag == "label" and found.get("for"):
                self.labelled.add(str(found["for"]))
            if tag in ("input", "select", "textarea") and found.get("type") != "hidden":
                self.controls.append(found)
            if tag == "button":
                self.button = {**found, "text": ""}
                self.controls.append(self.button)

        def handle_data(self, data: str) -> None:
            if self.button is not None:
                self.button["text"] = (self.button["text"] or "") + data.strip()

        def handle_endtag(self, tag: str) -> None:
            if tag == "button":
                self.button = None

    async with running_gateway(settings(tmp_path)) as h:
        await sign_in(h.client)
        for page in ("/", "/routes", "/parked", "/unrouted", "/trace?q=%2B79990001122", "/plugins"):
            for lang in ("en", "ru"):
                answer = await h.client.get(f"/console{page}", params={"lang": lang})
                assert answer.status_code == 200, page
                parsed = Controls()
                parsed.feed(answer.text)
                for control in parsed.controls:
                    named = (
                        control.get("aria-label")
                        or control.get("text")
                        or control.get("id") in parsed.labelled
                    )
                    assert named, f"{page} ({lang}): an unnamed control {control}"


async def test_ids_out_of_range_are_refused_as_such_not_500(tmp_path: Path) -> None:
    async with running_gateway(settings(tmp_path)) as h:
        await sign_in(h.client)
        token = csrf_of((await h.client.get("/console/parked")).text)
        for job in ("999999999999999999999", "²", "0", "-1"):
            answer = await h.client.post(
                "/console/parked/replay", data={"mode": "one", "job": job, "csrf": token}
            )
            assert answer.status_code == 303, (job, answer.text)
            assert "problem=selection" in answer.headers["location"]
        for query in ("#999999999999999999", "job:²", "?n=99999999999999999999999"):
            page = await h.client.get("/console/trace", params={"q": query})
            assert page.status_code == 200, (query, page.text)
        listing = await h.client.get("/console/parked", params={"n": "9" * 40})
        assert listing.status_code == 200


async def test_unrouted_ids_out_of_range_select_nothing(tmp_path: Path) -> None:
    async with running_gateway(settings(tmp_path, routes={})) as h:
        await sign_in(h.client)
        token = csrf_of((await h.client.get("/console/unrouted")).text)
        for held in ("999999999999999999999", "²"):
            answer = await h.client.post(
                "/console/unrouted/replay", data={"csrf": token, "id": held}
            )
            assert "problem=selection" in answer.headers["location"], held
        page = await h.client.get("/console/unrouted", params={"n": "²"})
        assert page.status_code == 200
