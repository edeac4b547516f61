"""`python -m gateway_fakes.bitrix24 --port 8010`: a standalone fake portal for demos.

One process serves the portal REST API, the OAuth token server and the `/_fake/*`
control API (see `control.py`) on one host; events are delivered automatically.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette

from . import control
from .portal import FakePortal


def build(host: str, port: int, *, rate: float | None) -> FakePortal:
    address = f"{host}:{port}"
    return FakePortal(
        domain=address,
        scheme="http",
        server_endpoint=f"http://{address}/rest/",
        rate=rate,
        auto_flush=True,
    )


def standalone_app(portal: FakePortal) -> Starlette:
    """Portal REST + OAuth + the `/_fake/*` control API on one host."""
    return Starlette(routes=[*control.routes(portal), *portal.app.routes])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Bitrix24 portal")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument("--no-rate-limit", action="store_true")
    args = parser.parse_args(argv)
    portal = build(args.host, args.port, rate=None if args.no_rate_limit else 2.0)
    app = standalone_app(portal)
    pair = portal.issue_tokens()
    print(f"portal REST      {portal.client_endpoint}")
    print(f"OAuth token      {portal.oauth_token_url}")
    print(f"control API      {portal.base_url}/_fake/state")
    print(f"member_id        {portal.member_id}")
    print(f"client_id        {portal.client_id}")
    print(f"client_secret    {portal.client_secret}")
    print(f"application_token {portal.application_token}")
    print(f"access_token     {pair.access_token}  refresh_token {pair.refresh_token}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
