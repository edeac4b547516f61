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
import contextlib
import sys
from collections.abc import Callable, Coroutine
from typing import Any

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
    from gateway.testing import configure_logging
    from gateway_fakes.demo import run_demo

    # The demo prints its own trace; a parked message is part of the story, not an alarm.
    configure_logging("ERROR", "text")
    return _until_stopped(run_demo(once=args.once))


def cmd_rehearse(args: argparse.Namespace) -> int:
    """Serve the fakes until Ctrl-C; 2 when the folder holds something else."""
    from pathlib import Path

    from gateway.testing import configure_logging
    from gateway_fakes.rehearsal import prepare_directory, rehearse

    configure_logging("WARNING", "text")
    directory = Path(args.directory).resolve()
    problem = prepare_directory(directory)
    if problem:
        print(f"gateway rehearse: {problem}", file=sys.stderr)
        return 2
    return _until_stopped(rehearse(directory, gateway_port=args.port))


def _until_stopped(main: Coroutine[Any, Any, int]) -> int:
    """Run `main`; Ctrl-C (SIGINT) or SIGTERM cancel it, so its cleanup runs (the demo's
    temporary folder is removed), and the command exits 0."""
    import asyncio
    import signal

    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await main
        except asyncio.CancelledError:
            return 0

    try:
        return asyncio.run(guarded())
    except KeyboardInterrupt:
        return 0
