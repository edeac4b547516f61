"""The HTML the portal shows in its iframes: install page, connector settings, app page.

Pages must be frameable by the portal (no X-Frame-Options; `frame-ancestors` names the
portal when known), load the BX24 JS SDK, and run no script but their own (a CSP nonce).
Everything interpolated is escaped.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from html import escape

from starlette.responses import HTMLResponse

from gateway.models import AccountState, AccountStatus

BX24_SDK = "//api.bitrix24.com/api/v1/"

_STYLE = """
body{font:14px/1.45 -apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#333;margin:16px}
h1{font-size:18px;margin:0 0 12px}table{border-collapse:collapse;width:100%}
td,th{padding:6px 8px;border-bottom:1px solid #e6e9ec;text-align:left;vertical-align:top}
.ok{color:#2e7d32}.warn{color:#b26a00}.bad{color:#c62828}.muted{color:#828b95}
.notice{padding:8px 12px;border-radius:6px;margin:0 0 12px;background:#eaf6e3}
.error{background:#fde8e8}button{padding:5px 14px;border-radius:4px;border:1px solid #bbc4cd;
background:#fff;cursor:pointer}button.primary{background:#25d366;border-color:#1fb157;color:#fff}
img.qr{width:180px;height:180px;display:block;margin-top:6px}form{display:inline}
"""

_STATES = {
    AccountStatus.CONNECTED: ("ok", "connected"),
    AccountStatus.STARTING: ("warn", "starting"),
    AccountStatus.NEEDS_QR: ("warn", "needs the QR code scanned"),
    AccountStatus.DISCONNECTED: ("bad", "disconnected"),
    AccountStatus.BANNED: ("bad", "banned by WhatsApp"),
    AccountStatus.UNPAID: ("bad", "unpaid"),
    AccountStatus.NEEDS_REINSTALL: ("bad", "needs reinstall"),
    AccountStatus.ERROR: ("bad", "error"),
    AccountStatus.UNKNOWN: ("muted", "state unknown"),
}


def page(
    title: str,
    body: str,
    *,
    frame_origin: str | None = None,
    status: int = 200,
    script: str = "BX24.init(function(){BX24.fitWindow();});",
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    ancestors = f"frame-ancestors {frame_origin}" if frame_origin else "frame-ancestors *"
    policy = (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'nonce-{nonce}' https://api.bitrix24.com; form-action 'self'; "
        f"base-uri 'none'; {ancestors}"
    )
    html = (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style>"
        f'<script src="{BX24_SDK}" nonce="{nonce}"></script></head><body>'
        f"<h1>{escape(title)}</h1>{body}"
        f'<script nonce="{nonce}">if(window.BX24){{{script}}}</script></body></html>'
    )
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    return HTMLResponse(html, status_code=status, headers=headers)


def message_page(
    title: str, text: str, *, status: int = 200, origin: str | None = None
) -> HTMLResponse:
    return page(title, f"<p>{escape(text)}</p>", status=status, frame_origin=origin)


def install_page(domain: str, error: str | None, origin: str) -> HTMLResponse:
    if error:
        body = (
            f'<p class="notice error">The gateway could not finish setting up {escape(domain)}: '
            f"{escape(error)}</p><p>Fix the cause and open the app again, or reinstall it.</p>"
        )
        return page("WhatsChat Gateway", body, frame_origin=origin)
    body = (
        f'<p class="notice">Installed on {escape(domain)}. The connector now appears in the '
        "Contact Center: open it, choose an open line and link a WhatsApp number there.</p>"
    )
    # Until installFinish runs, Bitrix24 sends no events and shows the app as unfinished.
    return page(
        "WhatsChat Gateway",
        body,
        frame_origin=origin,
        script="BX24.init(function(){BX24.installFinish();});",
    )


@dataclass(slots=True)
class ChannelView:
    name: str
    state: AccountState
    linked_here: bool = False
    linked_elsewhere: str | None = None
    fixed: bool = False  # linked by settings.toml, not changeable here


@dataclass(slots=True)
class LineView:
    member_id: str
    domain: str
    origin: str
    line: int
    action_url: str
    form_token: str
    auth_id: str
    channels: list[ChannelView] = field(default_factory=list)
    notice: str | None = None
    error: str | None = None
    parked: str | None = None


def _ids(member_id: str, line: int | None) -> str:
    # What an integrator needs to write this link into settings.toml instead.
    target = f"{member_id}/{line}" if line is not None else f"{member_id}/<line id>"
    return f'<p class="muted">Route target for settings.toml: <code>{escape(target)}</code></p>'


def _state(state: AccountState) -> str:
    css, label = _STATES.get(state.status, ("muted", state.status.value))
    html = f'<span class="{css}">{escape(label)}</span>'
    if state.detail:
        html += f' <span class="muted">{escape(state.detail[:200])}</span>'
    if state.status is AccountStatus.NEEDS_QR and state.qr and state.qr.startswith("data:image/"):
        html += f'<img class="qr" alt="QR code" src="{escape(state.qr, quote=True)}">'
    return html


def _button(
    view: LineView, action: str, label: str, channel: str = "", primary: bool = False
) -> str:
    css = ' class="primary"' if primary else ""
    return (
        f'<form method="post" action="{escape(view.action_url, quote=True)}">'
        f'<input type="hidden" name="action" value="{escape(action, quote=True)}">'
        f'<input type="hidden" name="channel" value="{escape(channel, quote=True)}">'
        f'<input type="hidden" name="form_token" value="{escape(view.form_token, quote=True)}">'
        f'<input type="hidden" name="AUTH_ID" value="{escape(view.auth_id, quote=True)}">'
        f'<button{css} type="submit">{escape(label)}</button></form>'
    )


def line_page(view: LineView) -> HTMLResponse:
    parts = []
    if view.notice:
        parts.append(f'<p class="notice">{escape(view.notice)}</p>')
    if view.error:
        parts.append(f'<p class="notice error">{escape(view.error)}</p>')
    if view.parked:
        parts.append(
            f'<p class="notice error">Deliveries to this line are paused: {escape(view.parked)}</p>'
        )
    linked = [c for c in view.channels if c.linked_here]
    if linked:
        names = ", ".join(c.name for c in linked)
        parts.append(f"<p>This line is linked to <b>{escape(names)}</b>.</p>")
    else:
        parts.append("<p>This line is not linked to a WhatsApp number yet. Pick one below.</p>")
    if not view.channels:
        parts.append('<p class="muted">The gateway has no WhatsApp channels configured.</p>')
    else:
        rows = []
        for channel in view.channels:
            reconnect = ""
            if channel.linked_here and view.parked:
                reconnect = _button(view, "link", "Reconnect", channel.name, primary=True) + " "
            if channel.linked_here and channel.fixed:
                action = reconnect + '<span class="muted">set in settings.toml</span>'
            elif channel.linked_here:
                action = reconnect + _button(view, "unlink", "Unlink", channel.name)
            elif channel.linked_elsewhere:
                action = f'<span class="muted">linked to {escape(channel.linked_elsewhere)}</span>'
            elif linked:
                action = '<span class="muted">unlink the current number first</span>'
            else:
                action = _button(view, "link", "Link", channel.name, primary=True)
            rows.append(
                f"<tr><td><b>{escape(channel.name)}</b></td><td>{_state(channel.state)}</td>"
                f"<td>{action}</td></tr>"
            )
        parts.append(
            "<table><tr><th>WhatsApp channel</th><th>State</th><th></th></tr>"
            + "".join(rows)
            + "</table>"
        )
    parts.append(f"<p>{_button(view, 'refresh', 'Refresh')}</p>")
    parts.append(_ids(view.member_id, view.line))
    title = f"WhatsApp on open line {view.line} ({view.domain})"
    return page(title, "".join(parts), frame_origin=view.origin)


@dataclass(slots=True)
class PortalView:
    member_id: str
    domain: str
    origin: str
    action_url: str
    form_token: str
    auth_id: str
    lines: list[tuple[int, str]]
    problem: str | None = None
    setup_error: str | None = None
    notice: str | None = None


def portal_page(view: PortalView) -> HTMLResponse:
    parts = []
    if view.notice:
        parts.append(f'<p class="notice">{escape(view.notice)}</p>')
    if view.problem:
        parts.append(f'<p class="notice error">{escape(view.problem)}</p>')
    if view.setup_error:
        parts.append(f'<p class="notice error">Setup is incomplete: {escape(view.setup_error)}</p>')
    if view.lines:
        items = "".join(
            f"<li>open line {line}: <b>{escape(channel)}</b></li>" for line, channel in view.lines
        )
        parts.append(f"<p>Linked open lines:</p><ul>{items}</ul>")
    else:
        parts.append("<p>No open line is linked yet.</p>")
    parts.append(
        "<p>To link a WhatsApp number, open the Contact Center, click the WhatsChat tile and "
        "choose an open line.</p>"
    )
    form = LineView(
        view.member_id, view.domain, view.origin, 0, view.action_url, view.form_token, view.auth_id
    )
    parts.append(f"<p>{_button(form, 'setup', 'Repair connector setup')}</p>")
    parts.append(_ids(view.member_id, None))
    return page(f"WhatsChat Gateway on {view.domain}", "".join(parts), frame_origin=view.origin)
