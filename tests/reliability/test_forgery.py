"""Scenario 5, forgery and access: forged or unauthenticated requests are refused, stored
nowhere and counted; media URLs at internal addresses are not fetched; no secret reaches
a log line or an error body.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_fakes.bitrix24 import FakePortal
from gateway_fakes.chatapi import FakeChatApi
from gateway_fakes.cloudapi import FakeCloudApi
from gateway_fakes.greenapi import FakeGreenApi

from gateway import logs
from gateway.fetch import ForbiddenAddress, GuardedFetcher, system_resolver
from gateway.logs import configure_logging
from gateway.settings_check import secret_values
from gateway.testing import running_gateway
from gateway.testing.tally import Tally

pytestmark = pytest.mark.anyio

ADMIN = "forgery-admin-token-7d1e"
APP_SECRET = "forgery-app-secret-51c0"
CHAT_SECRET = "forgery-webhook-secret-0123456789"
GREEN_TOKEN = "forgery-green-hook-token-0123"
TEST_TOKEN = "forgery-test-token-a1b2"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back for the other tests."""
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", *logs.FILTERED_LOGGERS)]
    saved = [(lg.handlers[:], lg.filters[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for logger, (handlers, filters, level, propagate) in zip(loggers, saved, strict=True):
        logger.handlers[:], logger.filters[:] = handlers, filters
        logger.setLevel(level)
        logger.propagate = propagate
    logging.captureWarnings(False)
    logs._installed = None


def settings(tmp: Path, portal: FakePortal) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp / 'gw.db'}"},
        "media": {"directory": str(tmp / "media")},
        "admin": {"token": ADMIN},
        "workers": {"poll_interval": 0.5, "concurrency": 1},
        "channels": {
            "cloud": {
                "provider": "cloudapi",
                "phone_number_id": "106540352242922",
                "access_token": "EAAGforgeryAccessToken000000",
                "app_secret": APP_SECRET,
                "verify_token": "forgery-verify-token",
            },
            "chat": {
                "provider": "chatapi",
                "base_url": "https://api.chat-api.test/instance1101",
                "token": "forgery-chatapi-token",
                "webhook_secret": CHAT_SECRET,
            },
            "green": {
                "provider": "greenapi",
                "api_url": "https://api.green-api.test",
                "id_instance": "1101000001",
                "api_token": "forgery0green0api0token",
                "webhook_token": GREEN_TOKEN,
            },
            "test": {
                "provider": "test-channel",
                "base_url": "http://channel.test",
                "token": TEST_TOKEN,
            },
        },
        "crms": {
            "b24": {
                "provider": "bitrix24",
                "client_id": portal.client_id,
                "client_secret": "forgery-client-secret-99",
            },
            "crm": {
                "provider": "test-crm",
                "base_url": "http://crm.test",
                "token": "forgery-crm-t0k",
            },
        },
        "routes": {"main": {"channel": "test", "crm": "crm"}},
    }


async def down(scope: Any, receive: Any, send: Any) -> None:
    """A CRM that is down, so the error paths (retries) log too."""
    await send({"type": "http.response.start", "status": 503, "headers": []})
    await send({"type": "http.response.body", "body": b"down"})


def cloud_body() -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"phone_number_id": "106540352242922"},
        "contacts": [{"wa_id": "79990000000", "profile": {"name": "x"}}],
        "messages": [
            {
                "from": "79990000000",
                "id": "wamid.F",
                "timestamp": "1",
                "type": "text",
                "text": {"body": "pay"},
            }
        ],
    }
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(payload).encode()


def forged_requests() -> list[tuple[str, str, dict[str, str], bytes]]:
    body = cloud_body()
    wrong_sig = "sha256=" + hmac.new(b"guessed", body, hashlib.sha256).hexdigest()
    test_msg = json.dumps(
        {"messages": [{"id": "f1", "chat": "c", "from": "c", "text": "pay"}]}
    ).encode()
    green = json.dumps(
        {
            "typeWebhook": "incomingMessageReceived",
            "instanceData": {"idInstance": 1101000001, "wid": "79876543210@c.us"},
            "timestamp": 1,
            "idMessage": "F1",
            "senderData": {"chatId": "79990000000@c.us", "sender": "79990000000@c.us"},
            "messageData": {
                "typeMessage": "textMessage",
                "textMessageData": {"textMessage": "pay"},
            },
        }
    ).encode()
    b24 = (
        b"event=ONIMCONNECTORMESSAGEADD&data[CONNECTOR]=whatschat&data[LINE]=1"
        b"&data[MESSAGES][0][message][text]=pay&auth[application_token]=guessed"
        b"&auth[member_id]=unknown-member&auth[domain]=evil.example.com"
    )
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    js = {"Content-Type": "application/json"}
    return [
        ("Cloud API, no signature", "/webhooks/cloud", js, body),
        (
            "Cloud API, wrong signature",
            "/webhooks/cloud",
            {**js, "X-Hub-Signature-256": wrong_sig},
            body,
        ),
        (
            "Chat API, wrong URL secret",
            "/webhooks/chat/guessed-secret-0123456789",
            js,
            b'{"messages": []}',
        ),
        ("Chat API, no URL secret", "/webhooks/chat", js, b'{"messages": []}'),
        ("GREEN-API, no token", "/webhooks/green", js, green),
        (
            "GREEN-API, wrong token",
            "/webhooks/green",
            {**js, "Authorization": "Bearer guessed"},
            green,
        ),
        (
            "test channel, wrong bearer",
            "/webhooks/test",
            {**js, "Authorization": "Bearer guessed"},
            test_msg,
        ),
        (
            "Bitrix24, unknown member_id + wrong application_token",
            "/webhooks/b24/events",
            form,
            b24,
        ),
        ("admin, no token", "/admin/dead-letters", {}, b""),
        (
            "admin, wrong token",
            "/admin/replay",
            {**js, "Authorization": "Bearer guessed"},
            b'{"lane": "x"}',
        ),
    ]


async def test_forged_requests_refused_stored_nowhere_counted_and_no_secret_logged(
    tmp_path: Path,
) -> None:
    tally = Tally("forgery")
    portal = FakePortal(installed=False)
    apps = {
        "graph.facebook.com": FakeCloudApi(access_token="EAAGforgeryAccessToken000000").app,
        "api.chat-api.test": FakeChatApi(token="forgery-chatapi-token").app,
        "api.green-api.test": FakeGreenApi(api_token="forgery0green0api0token").app,
        "acme.bitrix24.com": portal.app,
        "oauth.bitrix.info": portal.oauth_app,
        "crm.test": down,
    }
    config = settings(tmp_path, portal)
    log = io.StringIO()
    refused: dict[str, int] = {}
    async with running_gateway(config, apps=apps) as h:
        secrets = secret_values(h.gateway.settings, h.gateway.host.providers)
        assert len(secrets) >= 8
        configure_logging("DEBUG", "json", secrets, stream=log)
        for name, path, headers, body in forged_requests():
            tally.inject(name)
            before = await h.gateway.store.stats(h.gateway.clock())
            response = (
                await h.client.post(path, content=body, headers=headers)
                if body or "replay" in path
                else await h.client.get(path, headers=headers)
            )
            assert response.status_code in (401, 403, 404), (
                name,
                response.status_code,
                response.text,
            )
            assert "error" in response.json(), name
            for secret in secrets:
                assert secret not in response.text, name
            assert await h.gateway.store.stats(h.gateway.clock()) == before, name
            refused[name] = response.status_code
        metrics = (await h.client.get("/metrics")).text
        # A legitimate message that fails downstream too, so error paths log as well.
        ok = await h.client.post(
            "/webhooks/test",
            json={"messages": [{"id": "ok1", "chat": "c", "from": "c", "text": "hi"}]},
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        )
        assert ok.status_code == 200
        await h.observer.wait_for("retried", 1, timeout=10)
    rejected = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("gateway_webhooks_rejected_total{")
    )
    admin_rejected = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("gateway_admin_rejected_total")
    )
    assert rejected >= 8 and admin_rejected == 2, metrics
    captured = log.getvalue()
    assert captured.count("\n") > 10
    leaked = [s for s in secrets if s in captured]
    assert leaked == [], leaked
    tally.extra.update(
        {
            "refused": len(refused),
            "rejected_metric": rejected,
            "admin_rejected_metric": admin_rejected,
            "log_lines": captured.count("\n"),
            "secrets_checked": len(secrets),
            "secrets_leaked": len(leaked),
        }
    )
    print(tally.summary())


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost/x",
        "http://[::1]/x",
        "http://10.0.0.1/x",
        "http://172.16.5.4/x",
        "http://192.168.1.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/x",
        "http://0.0.0.0/x",
        "http://2130706433/x",
        "http://0x7f.1/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[fe80::1]/x",
        "file:///etc/passwd",
        "http://user:pw@example.com/x",
    ],
)
async def test_media_urls_at_internal_addresses_are_not_fetched(url: str) -> None:
    async with httpx.AsyncClient() as http:
        fetcher = GuardedFetcher(http, resolver=system_resolver)
        with pytest.raises(ForbiddenAddress):
            await fetcher.check_url(url)
