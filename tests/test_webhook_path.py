"""The lean webhook path answers as the Starlette app did: same bodies, statuses, errors."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway import PluginContext
from gateway.app import GC_YOUNG_THRESHOLD, create_app, settle_gc
from gateway.hookspecs import hookimpl
from gateway.providers import WebhookRequest, WebhookResult
from gateway.testing import GatewayHarness, Recorder, running_gateway

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": "Bearer wa-token"}


def settings(tmp_path: Path) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "channels": {
            "wa": {
                "provider": "test-channel",
                "base_url": "http://channel.test",
                "token": "wa-token",
            }
        },
        "crms": {"crm": {"provider": "test-crm", "base_url": "http://crm.test", "token": "c"}},
        "routes": {"main": {"channel": "wa", "crm": "crm"}},
    }


def customer(msg_id: str) -> dict[str, Any]:
    return {"messages": [{"id": msg_id, "chat": "c1", "from": "c1", "text": msg_id}]}


class ExtraRoutes:
    """A plugin with a route of its own under /webhooks, for a method webhooks don't take."""

    @hookimpl
    def http_routes(self, context: PluginContext) -> list[Route]:
        async def purge(_request: object) -> PlainTextResponse:
            return PlainTextResponse("purged")

        return [Route("/webhooks/wa/purge", purge, methods=["DELETE"])]


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[GatewayHarness]:
    apps = {"channel.test": Recorder().app, "crm.test": Recorder().app}
    async with running_gateway(settings(tmp_path), apps=apps, plugins=[ExtraRoutes()]) as h:
        yield h


def client_of(h: GatewayHarness, root_path: str = "") -> httpx.AsyncClient:
    """A client of a second app on the same gateway, which keeps its 500s (Starlette's last
    resort re-raises them after the answer, for the server to log)."""
    transport = httpx.ASGITransport(
        app=create_app(h.gateway), raise_app_exceptions=False, root_path=root_path
    )
    return httpx.AsyncClient(transport=transport, base_url="http://gateway.test")


async def test_answers_match_starlettes_routes(h: GatewayHarness) -> None:
    # A root_path (a proxy in front) sends webhooks through Starlette's routes instead.
    async with client_of(h) as lean, client_of(h, root_path="/gw") as routed:
        for path, msg_id, headers in [
            ("/webhooks/wa", "m1", AUTH),
            ("/webhooks/wa", "m1", AUTH),
            ("/webhooks/wa/extra/page", "m2", AUTH),
            ("/webhooks/wa", "m3", {}),
            ("/webhooks/nope", "m4", {}),
        ]:
            # Each app gets messages of its own: they share one gateway, hence one store.
            first = await lean.post(path, json=customer(msg_id), headers=headers)
            second = await routed.post("/gw" + path, json=customer("r" + msg_id), headers=headers)
            assert first.status_code == second.status_code, path
            assert first.content == second.content, path
            assert first.headers == second.headers, path
    assert first.status_code == 404
    assert first.json()["error"]["message"] == "no instance named 'nope'"


async def test_a_bad_body_is_refused_as_before(h: GatewayHarness) -> None:
    response = await h.client.post("/webhooks/wa", content=b"{nope", headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["instance"] == "wa"
    assert response.headers["content-type"] == "application/json"


async def test_other_methods_and_paths_go_to_starlette(h: GatewayHarness) -> None:
    wrong = await h.client.delete("/webhooks/wa")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["status"] == 405
    assert "POST" in wrong.headers["allow"]
    # A plugin's route under /webhooks for a method webhooks don't take is reachable.
    purge = await h.client.delete("/webhooks/wa/purge")
    assert (purge.status_code, purge.text) == (200, "purged")
    for path in ["/webhooks/", "/webhooks//wa"]:
        missing = await h.client.post(path, json={})
        assert missing.status_code == 404
        assert missing.json()["error"]["status"] == 404


async def test_an_unexpected_exception_is_the_apps_json_500(
    h: GatewayHarness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: WebhookRequest) -> WebhookResult:
        raise RuntimeError("db password is hunter2")

    monkeypatch.setattr(h.gateway.instances["wa"], "handle_webhook", broken)
    async with client_of(h) as client:
        with caplog.at_level(logging.ERROR, logger="gateway.http"):
            response = await client.post(
                "/webhooks/wa", json=customer("m1"), headers={"X-Request-ID": "abc-1"}
            )
    assert response.status_code == 500
    assert response.json() == {
        "error": {"status": 500, "message": "internal error", "request_id": "abc-1"}
    }
    assert response.headers["x-request-id"] == "abc-1"
    [record] = [r for r in caplog.records if r.name == "gateway.http"]
    assert "POST /webhooks/wa" in record.getMessage()


async def test_an_http_exception_gets_the_apps_json(
    h: GatewayHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def teapot(request: WebhookRequest) -> WebhookResult:
        raise HTTPException(418, "short and stout", headers={"X-Pot": "1"})

    monkeypatch.setattr(h.gateway.instances["wa"], "handle_webhook", teapot)
    response = await h.client.post("/webhooks/wa", json=customer("m1"))
    assert response.status_code == 418
    assert response.json() == {"error": {"status": 418, "message": "short and stout"}}
    assert response.headers["x-pot"] == "1"


async def test_a_provider_response_runs_its_background_then_observations(
    h: GatewayHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []

    async def page(request: WebhookRequest) -> WebhookResult:
        async def after() -> None:
            ran.append("provider's task")

        from starlette.background import BackgroundTask

        answer = PlainTextResponse(f"hello {request.subpath}", background=BackgroundTask(after))
        return WebhookResult(response=answer)

    monkeypatch.setattr(h.gateway.instances["wa"], "handle_webhook", page)
    response = await h.client.get("/webhooks/wa/welcome?x=1")
    assert (response.status_code, response.text) == (200, "hello welcome")
    assert ran == ["provider's task"]


def test_settle_gc_freezes_what_startup_made_and_collects_young_objects_less_often() -> None:
    threshold = gc.get_threshold()
    try:
        settle_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, threshold[1], threshold[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
