"""Run the fake standalone: `python -m gateway_fakes.cloudapi --port 8030`.

Point the gateway's Cloud API base URL at `http://HOST:PORT`; media URLs then point back here
too (`--public-url`). Drive it with the `/_fake/*` endpoints (see `control.py`).
"""

from __future__ import annotations

import argparse

import uvicorn

from .ids import SkewClock
from .server import FAKE_APP_KEY, FAKE_BEARER, FakeCloudApi


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway_fakes.cloudapi")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8030)
    parser.add_argument("--public-url", help="base URL clients reach this server at")
    parser.add_argument("--callback-url", help="the gateway's Cloud API webhook URL")
    parser.add_argument("--phone-number-id", default="106540352242922")
    parser.add_argument("--waba-id", default="102290129340398")
    parser.add_argument("--display-phone-number", default="15550783881")
    parser.add_argument("--access-token", default=FAKE_BEARER)
    parser.add_argument("--app-secret", default=FAKE_APP_KEY)
    parser.add_argument("--version", default="v21.0")
    args = parser.parse_args(argv)

    fake = FakeCloudApi(
        phone_number_id=args.phone_number_id,
        waba_id=args.waba_id,
        display_phone_number=args.display_phone_number,
        access_token=args.access_token,
        app_secret=args.app_secret,
        version=args.version,
        clock=SkewClock(),
        callback_url=args.callback_url,
    )
    fake.media_base_url = args.public_url or f"http://{args.host}:{args.port}"
    fake.timeout_hang = 60.0
    print(
        f"fake Cloud API: {fake.media_base_url}/{fake.version}/{fake.phone_number_id}/messages"
        f" token={fake.access_token} app_secret={fake.app_secret}"
    )
    uvicorn.run(fake.app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
