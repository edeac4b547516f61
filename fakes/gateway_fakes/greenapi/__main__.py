"""`python -m gateway_fakes.greenapi --port 8021`: a standalone fake GREEN-API for the demo."""

from __future__ import annotations

import argparse
import time

from .core import FakeGreenApi
from .model import ALL_NOTIFICATIONS_ON


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gateway_fakes.greenapi",
        description="Fake GREEN-API server; drive it with POST /_fake/<action>.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8021)
    parser.add_argument("--id-instance", default="1101000001")
    parser.add_argument("--api-token", default="fake0green0api0token")
    parser.add_argument("--webhook-url", default="")
    parser.add_argument("--webhook-token", default="")
    parser.add_argument("--state", default="authorized", help="initial stateInstance")
    parser.add_argument(
        "--all-off", action="store_true", help="start with every notification setting 'no'"
    )
    parser.add_argument("--retry-pause", type=float, default=60.0, help="head-of-line retry pause")
    parser.add_argument("--deliver-every", type=float, default=0.5, help="webhook push interval")
    args = parser.parse_args(argv)

    import uvicorn

    fake = FakeGreenApi(
        args.id_instance,
        args.api_token,
        clock=time.time,
        host=f"http://{args.host}:{args.port}",
        state=args.state,
        webhook_url=args.webhook_url,
        webhook_token=args.webhook_token,
        settings=None if args.all_off else ALL_NOTIFICATIONS_ON,
        retry_pause=args.retry_pause,
    )
    # Over a real socket an exception is a 500, so injected timeouts hang instead.
    fake.faults.timeout_behaviour = "hang"
    print(f"fake GREEN-API at {fake.url('getStateInstance')}")
    uvicorn.run(fake.make_app(deliver_every=args.deliver_every), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
