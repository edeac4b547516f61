"""Fake provider servers, written from the providers' public docs, for tests, the demo and authors.

Subpackages, independent of each other: `bitrix24` (a portal with Open Lines and OAuth),
`chatapi`, `greenapi` and `cloudapi` (WhatsApp providers). Each is an in-process Starlette
app that also runs standalone (`python -m gateway_fakes.chatapi --port 8020`). Machinery the
fakes share lives in `gateway.testing`.

Loaded as the `fakes` plugin, this package contributes `gateway demo` (`demo.py`). It stays
light to import: the plugin host loads it on every CLI start that needs plugin commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from gateway import hookimpl

DEMO_HELP = "play a WhatsApp <-> Bitrix24 conversation against bundled fakes"


REHEARSE_HELP = (
    "start a fake Bitrix24 portal (https) and WhatsApp number, write settings for "
    "`gateway run`, and print the steps of an offline rehearsal"
)


@hookimpl
def cli_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Contribute `gateway demo [--once]` and `gateway rehearse`."""
    demo = command("demo", cmd_demo, DEMO_HELP)
    demo.add_argument("--once", action="store_true", help="exit when the conversation is over")
    rehearse = command("rehearse", cmd_rehearse, REHEARSE_HELP)
    rehearse.add_argument(
        "--directory",
        default="rehearsal",
        help="where the settings, certificates and store go (default ./rehearsal)",
    )
    rehearse.add_argument(
        "--port", type=int, help="the port the gateway will listen on (default: a free one)"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo; 0 when the conversation played through."""
    import asyncio

    from gateway.testing import configure_logging
    from gateway_fakes.demo import run_demo

    # The demo prints its own trace; a parked message is part of the story, not an alarm.
    configure_logging("ERROR", "text")
    try:
        code: int = asyncio.run(run_demo(once=args.once))
    except KeyboardInterrupt:
        return 0
    return code


def cmd_rehearse(args: argparse.Namespace) -> int:
    """Serve the fakes until Ctrl-C; 2 when the folder holds something else."""
    import asyncio
    from pathlib import Path

    from gateway.testing import configure_logging
    from gateway_fakes.rehearsal import prepare_directory, rehearse

    configure_logging("WARNING", "text")
    directory = Path(args.directory).resolve()
    problem = prepare_directory(directory)
    if problem:
        print(f"gateway rehearse: {problem}", file=sys.stderr)
        return 2
    try:
        code: int = asyncio.run(rehearse(directory, gateway_port=args.port))
    except KeyboardInterrupt:
        return 0
    return code
