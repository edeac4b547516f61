"""`python -m gateway_fakes.chatapi --port 8020`: a standalone fake Chat API for the demo."""

from __future__ import annotations

import argparse
import time

from .core import FakeChatApi


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gateway_fakes.chatapi",
        description="Fake Chat API server; drive it with POST /_fake/<action> (see README).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8020)
    parser.add_argument("--instance-id", default="1101")
    parser.add_argument("--token", default="tok")
    parser.add_argument("--webhook-url", default="", help="initial webhookUrl setting")
    parser.add_argument("--state", default="authenticated", help="initial accountStatus")
    parser.add_argument("--acks", action="store_true", help="start with ackNotificationsOn")
    parser.add_argument("--guaranteed-hooks", action="store_true")
    parser.add_argument("--retry-delay", type=float, default=60.0, help="seconds between retries")
    parser.add_argument("--deliver-every", type=float, default=0.5, help="webhook push interval")
    args = parser.parse_args(argv)

    import uvicorn

    fake = FakeChatApi(
        args.instance_id,
        args.token,
        clock=time.time,
        host=f"http://{args.host}:{args.port}",
        state=args.state,
        webhook_url=args.webhook_url,
        settings={"ackNotificationsOn": args.acks, "guaranteedHooks": args.guaranteed_hooks},
        hook_retry_delay=args.retry_delay,
    )
    # Over a real socket an exception is a 500, so injected timeouts hang instead.
    fake.faults.timeout_behaviour = "hang"
    print(f"fake Chat API instance at {fake.base_url} (token {fake.token})")
    uvicorn.run(fake.make_app(deliver_every=args.deliver_every), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
