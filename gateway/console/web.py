"""The console's HTTP plumbing: templates, sign-in guard, CSRF and cross-site checks.

Pages (`pages.py`) and form actions (`actions.py`) are plain functions of a `View`, which
carries the request, the session, the language and the gateway; this module turns them
into Starlette endpoints with the guard around them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from gateway.console import session as sessions
from gateway.console.texts import pick_language, translate, translate_plural

if TYPE_CHECKING:
    from gateway.runtime import Gateway

PREFIX = "/console"
LANG_COOKIE = "gateway_console_lang"
# The console loads nothing from elsewhere; QR codes come as data: URLs.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_templates = Environment(
    loader=PackageLoader("gateway.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def when(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_templates.filters["when"] = when


@dataclass(slots=True)
class View:
    """One request to the console, signed in (or on its way to)."""

    request: Request
    gateway: Gateway
    language: str
    session: sessions.Session | None

    def t(self, key: str, /, **values: object) -> str:
        return translate(self.language, key, **values)

    def tn(self, key: str, count: int, /, **values: object) -> str:
        return translate_plural(self.language, key, count, **values)

    @property
    def now(self) -> float:
        return self.gateway.clock()

    @property
    def csrf(self) -> str:
        token = self.gateway.admin_token
        return "" if self.session is None or not token else sessions.csrf_token(token, self.session)

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        page = _templates.get_template(template).render(
            t=self.t,
            tn=self.tn,
            lang=self.language,
            csrf=self.csrf,
            csrf_field=sessions.CSRF_FIELD,
            signed_in=self.session is not None,
            path=self.request.url.path,
            prefix=PREFIX,
            **context,
        )
        return with_headers(HTMLResponse(page, status_code=status))

    def redirect(self, page: str, **query: object) -> Response:
        suffix = f"?{urlencode({k: str(v) for k, v in query.items()})}" if query else ""
        return with_headers(RedirectResponse(f"{PREFIX}{page}{suffix}", status_code=303))


Handler = Callable[[View], Awaitable[Response]]


def with_headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def secure_cookies(gateway: Gateway) -> bool:
    return gateway.settings.public_url.lower().startswith("https://")


async def current_session(request: Request, gateway: Gateway) -> sessions.Session | None:
    found = sessions.read_cookie(
        request.cookies.get(sessions.COOKIE), gateway.admin_token, gateway.clock()
    )
    if found is None:
        return None
    if await gateway.store.kv_get(sessions.REVOKED, found.nonce) is not None:
        return None
    return found


def language_of(request: Request) -> str:
    return pick_language(
        request.query_params.get("lang") or request.cookies.get(LANG_COOKIE),
        request.headers.get("accept-language", ""),
    )


def cross_site(request: Request, gateway: Gateway) -> bool:
    """A state-changing request that a browser says came from another site or origin."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return True
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin == "null"
    own = {f"{request.url.scheme}://{request.headers.get('host', '')}"}
    public = urlsplit(gateway.settings.public_url)
    own.add(f"{public.scheme}://{public.netloc}")
    return origin.rstrip("/") not in own


def endpoint(gateway: Gateway, handler: Handler, *, public: bool = False) -> Any:
    """A Starlette endpoint: signed-in guard, CSRF and origin checks on POST, language."""

    async def serve(request: Request) -> Response:
        language = language_of(request)
        session = await current_session(request, gateway)
        view = View(request, gateway, language, session)
        if request.method == "POST":
            if cross_site(request, gateway):
                return _refuse(view, "cross-site")
            if not public:
                if session is None:
                    return view.redirect("/signin", reason="expired")
                form = await request.form()
                given = request.headers.get(sessions.CSRF_HEADER) or form.get(sessions.CSRF_FIELD)
                token = gateway.admin_token or ""
                if not sessions.csrf_matches(str(given or ""), token, session):
                    return _refuse(view, "csrf")
        elif not public and session is None:
            return view.redirect("/signin")
        response = await handler(view)
        if request.query_params.get("lang") == language:
            response.set_cookie(
                LANG_COOKIE,
                language,
                max_age=365 * 86400,
                path=PREFIX,
                httponly=True,
                samesite="strict",
                secure=secure_cookies(gateway),
            )
        return response

    return serve


def _refuse(view: View, why: str) -> Response:
    metrics = view.gateway.metrics
    if "gateway_admin_rejected_total" in metrics:
        metrics.inc("gateway_admin_rejected_total")
    return view.render("refused.html", status=403, why=why)


def start_session(view: View, response: Response) -> Response:
    token = view.gateway.admin_token or ""
    cookie, _ = sessions.new_cookie(token, view.gateway.clock())
    response.set_cookie(
        sessions.COOKIE,
        cookie,
        max_age=int(sessions.LIFETIME),
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(view.gateway),
    )
    return response


async def end_session(view: View, response: Response) -> Response:
    if view.session is not None:
        await view.gateway.store.kv_put(sessions.REVOKED, view.session.nonce, time.time())
    response.delete_cookie(sessions.COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response
