"""The web console at `/console`: the gateway's state for the people who run it.

Server-rendered pages (Jinja2, autoescaped: customer text never acts as markup) with a
little htmx, shipped in the package (no CDN). Sign-in takes the admin token once; then a
session cookie and a CSRF token on every form (see `session.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.console import actions, pages
from gateway.console.web import PREFIX, Handler, endpoint

if TYPE_CHECKING:
    from gateway.runtime import Gateway

__all__ = ["console_routes"]


def console_routes(gateway: Gateway) -> Mount:
    """The `/console` mount; add it to the app's routes."""

    def page(path: str, handler: Handler, *, public: bool = False) -> Route:
        return Route(path, endpoint(gateway, handler, public=public), methods=["GET", "HEAD"])

    def action(path: str, handler: Handler, *, public: bool = False) -> Route:
        return Route(path, endpoint(gateway, handler, public=public), methods=["POST"])

    return Mount(
        PREFIX,
        routes=[
            page("/", pages.overview),
            page("/signin", pages.signin, public=True),
            action("/signin", actions.signin, public=True),
            action("/signout", actions.signout),
            page("/routes", pages.routes),
            action("/routes/link", actions.link),
            action("/routes/unlink", actions.unlink),
            page("/parked", pages.parked),
            action("/parked/replay", actions.replay),
            page("/unrouted", pages.unrouted),
            action("/unrouted/replay", actions.hold_again),
            page("/trace", pages.trace),
            page("/plugins", pages.plugins),
            Mount("/static", StaticFiles(packages=[("gateway.console", "static")]), name="static"),
        ],
        name="console",
    )
