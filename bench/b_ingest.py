"""Benchmarks 1 and 2: webhook ingest against the framework's own limit.

wrk (Debian's package) loads the gateway's webhook (`gateway run`, durable commit before
the 2xx, delivery workers running against the `crm` fake) and a bare Starlette endpoint
that only parses the same body, one after the other in each repetition, same uvicorn
settings, same connections. Every 2xx the gateway gave must be an event in its store.

Between the two, the `floor` server (`bench.servers`): the bare endpoint plus one write
of the parsed body through the gateway's own SQLite store before answering, and nothing
else. It is the ceiling of any gateway that commits before its 2xx on this store, so the
target can be read against what durability alone costs on the same machine in the same
run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench import common as c

WRK = c.ROOT / "bench" / "wrk"
CONVERSATIONS = 200


def _bench(
    name: str,
    *,
    quick: bool,
    channel: str,
    settings_for: Any,
    path: str,
    script: Path,
    script_args: Any,
) -> dict[str, Any]:
    reps = 3
    seconds = 5 if quick else 10
    connections = 32
    runs: list[dict[str, Any]] = []

    def load(url: str, workdir: Path, tag: str) -> c.WrkResult:
        args = script_args(workdir, tag)
        return c.wrk(url + path, script, connections=connections, seconds=seconds, args=args)

    with (
        c.workspace(name) as work,
        c.server("bare", work) as bare,
        c.server("floor", work, "--db", str(work / "floor.db")) as floor,
        c.server("crm", work) as crm,
    ):
        for rep in range(reps):
            base = load(bare.url, work, f"bare{rep}")
            durable = load(floor.url, work, f"floor{rep}")
            rundir = work / f"rep{rep}"
            rundir.mkdir()
            settings = settings_for(rundir, crm.url)
            with c.gateway(settings, rundir) as gw:
                result = load(gw.url, rundir, f"gw{rep}")
                rss = gw.rss_peak_mb()
            accepted = result.requests - result.non_2xx
            stored = c.count_rows(
                rundir / "gateway.db",
                "SELECT COUNT(*) FROM events WHERE instance = ?",
                (channel,),
            )
            runs.append(
                {
                    "bare_rps": base.rps,
                    "bare_p99_ms": base.latency_ms.get("p99"),
                    "gateway_rps": result.rps,
                    "gateway_p50_ms": result.latency_ms.get("p50"),
                    "gateway_p99_ms": result.latency_ms.get("p99"),
                    "ratio": result.rps / base.rps,
                    "floor_rps": durable.rps,
                    "floor_p99_ms": durable.latency_ms.get("p99"),
                    "floor_ratio": durable.rps / base.rps,
                    "accepted": accepted,
                    "non_2xx": result.non_2xx,
                    "socket_errors": result.errors,
                    "stored": stored,
                    "missing": max(0, accepted - stored),
                    "gateway_rss_mb": rss,
                }
            )
    return {
        "runs": runs,
        "ratio": c.summary([r["ratio"] for r in runs]),
        "gateway_rps": c.summary([r["gateway_rps"] for r in runs]),
        "bare_rps": c.summary([r["bare_rps"] for r in runs]),
        "gateway_p99_ms": c.summary([r["gateway_p99_ms"] for r in runs]),
        "floor_ratio": c.summary([r["floor_ratio"] for r in runs]),
        "floor_rps": c.summary([r["floor_rps"] for r in runs]),
        "floor_p99_ms": c.summary([r["floor_p99_ms"] for r in runs]),
        "missing": sum(r["missing"] for r in runs),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "setup": f"wrk -t2 -c{connections} -d{seconds}s, {reps} repetitions, "
        f"{CONVERSATIONS} conversations, unique message per request",
    }


def chatapi(quick: bool = False) -> dict[str, Any]:
    def settings_for(rundir: Path, crm_url: str) -> Path:
        return c.chatapi_to_crm(rundir, crm_url)

    return _bench(
        "ingest-chatapi",
        quick=quick,
        channel="wa",
        settings_for=settings_for,
        path=f"/webhooks/wa/{c.CHATAPI_SECRET}",
        script=WRK / "chatapi.lua",
        script_args=lambda _dir, tag: [tag, str(CONVERSATIONS)],
    )


# Bitrix24 ----------------------------------------------------------------------------------


def bitrix24_event_template(line: int = 1) -> str:
    """ONIMCONNECTORMESSAGEADD as the fake portal encodes it, with @ID@/@CHAT@ holes."""
    from gateway_fakes.bitrix24 import FakePortal
    from gateway_fakes.bitrix24.events import connector_data, event_form

    portal = FakePortal(application_token=c.B24_APP_TOKEN, member_id=c.B24_MEMBER)
    item = {
        "im": {"chat_id": 7, "message_id": "@ID@"},
        "message": {"user_id": 27, "text": "[b]Anna:[/b][br] hello from the operator"},
        "chat": {"id": "@CHAT@"},
    }
    data = connector_data("whatschat", line, "MESSAGES", [item])
    form = event_form("ONIMCONNECTORMESSAGEADD", 1, data, int(time.time()), portal.event_auth())
    return urlencode(form).replace("%40ID%40", "@ID@").replace("%40CHAT%40", "@CHAT@")


def portal_record(client_endpoint: str, **tokens: Any) -> dict[str, Any]:
    now = time.time()
    return {
        "member_id": tokens.get("member_id", c.B24_MEMBER),
        "client_endpoint": client_endpoint,
        "server_endpoint": "https://oauth.bitrix.info/rest/",
        "access_token": tokens.get("access_token", "bench-access"),
        "refresh_token": tokens.get("refresh_token", "bench-refresh"),
        "application_token": tokens.get("application_token", c.B24_APP_TOKEN),
        "expires_at": now + 86400,
        "scope": "imopenlines,imconnector,im,placement",
        "status": "L",
        "installed_at": now,
        "refreshed_at": now,
    }


def b24_settings(rundir: Path, channel_url: str, **options: Any) -> Path:
    return c.write_settings(
        rundir,
        channels={"wa": {**c.test_crm(channel_url), "provider": "test-channel"}},
        crms={
            "b24": {
                "provider": "bitrix24",
                "client_id": "app.573ad8a0346747.09223434",
                "client_secret": "fake-client-secret",
                **options,
            }
        },
        routes={},
    )


def seed_b24(db: Path, records: list[dict[str, Any]], routes: list[tuple[str, str, str]]) -> None:
    """Install portals and link lines the way the plugin stores them, before the start."""
    import asyncio

    from gateway.store.base import StoredRoute
    from gateway.store.sqlite import SQLiteStore

    async def seed() -> None:
        store = SQLiteStore(str(db))
        await store.open()
        try:
            for record in records:
                await store.kv_put("instance:b24", f"portal:{record['member_id']}", record)
            for name, channel, target in routes:
                await store.save_route(StoredRoute(name, channel, "b24", target, "both"))
        finally:
            await store.close()

    asyncio.run(seed())


def bitrix24(quick: bool = False) -> dict[str, Any]:
    def settings_for(rundir: Path, crm_url: str) -> Path:
        path = b24_settings(rundir, crm_url)
        seed_b24(
            rundir / "gateway.db",
            [portal_record("http://127.0.0.1:9/rest/")],
            [("line1", "wa", f"{c.B24_MEMBER}/1")],
        )
        return path

    def script_args(rundir: Path, tag: str) -> list[str]:
        template = rundir / "event.form"
        if not template.exists():
            template.write_text(bitrix24_event_template())
        return [str(template), tag, str(CONVERSATIONS)]

    return _bench(
        "ingest-bitrix24",
        quick=quick,
        channel="b24",
        settings_for=settings_for,
        path="/webhooks/b24/events",
        script=WRK / "bitrix24.lua",
        script_args=script_args,
    )
