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

from gateway import AccountState, AccountStatus

from .texts import N_, Translator

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
.help{color:#525c69;font-size:13px}
"""

# Label and what the admin should do, per state of a WhatsApp number.
STATE_TEXTS = {
    AccountStatus.CONNECTED: ("ok", N_("state.connected"), N_("state.connected.help")),
    AccountStatus.STARTING: ("warn", N_("state.starting"), N_("state.starting.help")),
    AccountStatus.NEEDS_QR: ("warn", N_("state.needs_qr"), N_("state.needs_qr.help")),
    AccountStatus.DISCONNECTED: ("bad", N_("state.disconnected"), N_("state.disconnected.help")),
    AccountStatus.BANNED: ("bad", N_("state.banned"), N_("state.banned.help")),
    AccountStatus.UNPAID: ("bad", N_("state.unpaid"), N_("state.unpaid.help")),
    AccountStatus.NEEDS_REINSTALL: (
        "bad",
        N_("state.needs_reinstall"),
        N_("state.needs_reinstall.help"),
    ),
    AccountStatus.ERROR: ("bad", N_("state.error"), N_("state.error.help")),
    AccountStatus.UNKNOWN: ("muted", N_("state.unknown"), N_("state.unknown.help")),
}


def page(
    title: str,
    body: str,
    *,
    language: str = "en",
    frame_origin: str | None = None,
    status: int = 200,
    script: str = "BX24.init(function(){BX24.fitWindow();});",
    own_script: str = "",
) -> HTMLResponse:
    """`script` runs once Bitrix24's SDK is there; `own_script` (shipped in this package,
    e.g. the settings page's refresh) runs whether or not the SDK loaded."""
    nonce = secrets.token_urlsafe(16)
    ancestors = f"frame-ancestors {frame_origin}" if frame_origin else "frame-ancestors *"
    policy = (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; connect-src 'self'; "
        f"script-src 'nonce-{nonce}' https://api.bitrix24.com; form-action 'self'; "
        f"base-uri 'none'; {ancestors}"
    )
    html = (
        f'<!doctype html><html lang="{escape(language, quote=True)}"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style>"
        f'<script src="{BX24_SDK}" nonce="{nonce}"></script></head><body>'
        f"<h1>{escape(title)}</h1>{body}"
        f'<script nonce="{nonce}">if(window.BX24){{{script}}}</script>'
        + (f'<script nonce="{nonce}">{own_script}</script>' if own_script else "")
        + "</body></html>"
    )
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    return HTMLResponse(html, status_code=status, headers=headers)


def message_page(
    t: Translator, text: str, *, status: int = 200, origin: str | None = None
) -> HTMLResponse:
    """A page with one sentence under the app's title (refusals, errors)."""
    return page(
        t.gettext("app.title"),
        f"<p>{escape(text)}</p>",
        language=t.language,
        status=status,
        frame_origin=origin,
    )


def html_of(template: str, **fragments: str) -> str:
    """A translated text as HTML: its words escaped, `fragments` (already HTML) put in."""
    return escape(template).format(**fragments)


def install_page(t: Translator, domain: str, error: str | None, origin: str) -> HTMLResponse:
    title = t.gettext("app.title")
    if error:
        body = (
            '<p class="notice error">'
            + html_of(t.gettext("install.failed"), domain=escape(domain), error=escape(error))
            + "</p><p>"
            + escape(t.gettext("install.failed.help"))
            + "</p>"
        )
        return page(title, body, language=t.language, frame_origin=origin)
    done = html_of(t.gettext("install.done"), domain=escape(domain))
    body = f'<p class="notice">{done}</p>'
    # Until installFinish runs, Bitrix24 sends no events and shows the app as unfinished.
    return page(
        title,
        body,
        language=t.language,
        frame_origin=origin,
        script="BX24.init(function(){BX24.installFinish();});",
    )


@dataclass(slots=True)
class ChannelView:
    name: str
    state: AccountState
    provider: str = ""
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
    #: What the link form's history choice preselects (`[history] days`).
    history_days: float = 0.0
    notice: str | None = None
    error: str | None = None
    parked: str | None = None
    language: str = "en"
    #: `PortalRecord.problem` and its detail: Bitrix24 refuses the portal's tokens.
    problem: tuple[str, str] | None = None
    #: The alert recipients as typed ("1, 27"); empty: who linked each number.
    alert_users: str = ""


def ids(t: Translator, member_id: str, line: int | None) -> str:
    # What an integrator needs to write this link into settings.toml instead.
    target = f"{member_id}/{line}" if line is not None else f"{member_id}/<line id>"
    code = f"<code>{escape(target)}</code>"
    text = html_of(t.gettext("page.route_target"), target=code)
    return f'<p class="muted">{text}</p>'


_SELF_EXPLAINED = frozenset({AccountStatus.NEEDS_QR, AccountStatus.STARTING})


def state_html(t: Translator, state: AccountState) -> str:
    css, label, help_ = STATE_TEXTS.get(state.status, STATE_TEXTS[AccountStatus.UNKNOWN])
    html = f'<span class="{css}">{escape(t.gettext(label))}</span>'
    # The provider's own words (English) add nothing to the catalogue's while it waits.
    if state.detail and state.status not in _SELF_EXPLAINED:
        html += f' <span class="muted">{escape(state.detail[:200])}</span>'
    html += f'<br><span class="help">{escape(t.gettext(help_))}</span>'
    if state.status is AccountStatus.NEEDS_QR and state.qr and state.qr.startswith("data:image/"):
        alt = escape(t.gettext("state.qr_alt"), quote=True)
        html += f'<img class="qr" alt="{alt}" src="{escape(state.qr, quote=True)}">'
    return html


def button(
    view: LineView,
    action: str,
    label: str,
    channel: str = "",
    primary: bool = False,
    field: str = "",
) -> str:
    css = ' class="primary"' if primary else ""
    return (
        f'<form method="post" action="{escape(view.action_url, quote=True)}">'
        f'<input type="hidden" name="action" value="{escape(action, quote=True)}">'
        f'<input type="hidden" name="channel" value="{escape(channel, quote=True)}">'
        f'<input type="hidden" name="form_token" value="{escape(view.form_token, quote=True)}">'
        f'<input type="hidden" name="AUTH_ID" value="{escape(view.auth_id, quote=True)}">'
        f'<input type="hidden" name="LANG" value="{escape(view.language, quote=True)}">'
        f'{field}<button{css} type="submit">{escape(label)}</button></form>'
    )


#: Days of history a link may import (the settings default is added when it differs).
HISTORY_CHOICES = (0.0, 1.0, 3.0, 7.0, 14.0, 30.0)


def history_field(t: Translator, view: LineView) -> str:
    """The link form's choice of how many days of history to import."""
    options = []
    for days in sorted({*HISTORY_CHOICES, view.history_days}):
        label = t.gettext("link.history.off") if days == 0 else f"{days:g}"
        selected = " selected" if days == view.history_days else ""
        options.append(f'<option value="{days:g}"{selected}>{escape(label)}</option>')
    label = escape(t.gettext("link.history"))
    select = f'<select name="history_days">{"".join(options)}</select>'
    return f'<label class="help">{label} {select}</label> '


def para(html: str, css: str = "") -> str:
    return f'<p class="{css}">{html}</p>' if css else f"<p>{html}</p>"


def muted(text: str) -> str:
    return f'<span class="muted">{escape(text)}</span>'


def banners(t: Translator, down: list[tuple[str, AccountState]]) -> list[str]:
    """A warning per linked number that does not work, saying what to do (`down` pairs a
    number's label with its state)."""
    out = []
    for name, state in down:
        _, label, help_ = STATE_TEXTS.get(state.status, STATE_TEXTS[AccountStatus.UNKNOWN])
        text = t.gettext(
            "banner.channel_down", channel=name, state=t.gettext(label), help=t.gettext(help_)
        )
        out.append(f'<p class="notice error banner">{escape(text)}</p>')
    return out


#: What an administrator does when Bitrix24 refuses the portal's tokens, per problem.
_PORTAL_HELP = {
    AccountStatus.UNPAID.value: N_("portal.problem.unpaid.help"),
    AccountStatus.NEEDS_REINSTALL.value: N_("state.needs_reinstall.help"),
}


def problem_banner(t: Translator, problem: str, detail: str) -> str:
    """Bitrix24 refuses the portal's tokens: what it means, what to do, Bitrix24's words."""
    try:
        status = AccountStatus(problem)
    except ValueError:
        status = AccountStatus.NEEDS_REINSTALL
    label = STATE_TEXTS.get(status, STATE_TEXTS[AccountStatus.NEEDS_REINSTALL])[1]
    help_ = _PORTAL_HELP.get(status.value, N_("state.needs_reinstall.help"))
    text = t.gettext("banner.portal_problem", state=t.gettext(label), help=t.gettext(help_))
    return (
        f'<p class="notice error banner" role="alert">{escape(text)}'
        f'<br><span class="muted">{escape(detail[:300])}</span></p>'
    )


def is_down(state: AccountState) -> bool:
    return state.status in DOWN_STATES


#: States in which a linked number carries no messages until someone acts.
DOWN_STATES = frozenset(
    {AccountStatus.NEEDS_QR, AccountStatus.DISCONNECTED, AccountStatus.BANNED, AccountStatus.UNPAID}
)


def users_form(t: Translator, view: PortalView | LineView) -> str:
    """Who gets the alerts: Bitrix24 user ids, or empty for who linked each number (one
    setting per portal, on the app's page and on every line's settings page)."""
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{escape(value, quote=True)}">'
        for name, value in (
            ("action", "alerts"),
            ("channel", ""),
            ("form_token", view.form_token),
            ("AUTH_ID", view.auth_id),
            ("LANG", view.language),
        )
    )
    label = escape(t.gettext("portal.alerts.label"))
    value = escape(view.alert_users, quote=True)
    save = escape(t.gettext("button.save"))
    return (
        f'<form method="post" class="users" action="{escape(view.action_url, quote=True)}">'
        f'{hidden}<label>{label}<br><input name="alert_users" value="{value}" size="30">'
        f'</label> <button type="submit">{save}</button></form>'
    )


@dataclass(slots=True)
class PortalView:
    member_id: str
    domain: str
    origin: str
    action_url: str
    form_token: str
    auth_id: str
    lines: list[tuple[int, str]]
    problem: tuple[str, str] | None = None
    setup_error: str | None = None
    notice: str | None = None
    language: str = "en"
    #: Linked numbers that do not work, with their state (a banner each).
    down: list[tuple[str, AccountState]] = field(default_factory=list)
    #: The alert recipients as typed ("1, 27"); empty: who linked each number.
    alert_users: str = ""
    error: str | None = None


def portal_page(t: Translator, view: PortalView) -> HTMLResponse:
    parts = banners(t, view.down)
    if view.error:
        parts.append(f'<p class="notice error">{escape(view.error)}</p>')
    if view.notice:
        parts.append(f'<p class="notice">{escape(view.notice)}</p>')
    if view.problem:
        parts.append(problem_banner(t, *view.problem))
    if view.setup_error:
        incomplete = html_of(t.gettext("portal.setup_incomplete"), error=escape(view.setup_error))
        parts.append(f'<p class="notice error">{incomplete}</p>')
    if view.lines:
        items = "".join(
            "<li>"
            + html_of(
                t.gettext("portal.line_item"), line=str(line), channel=f"<b>{escape(name)}</b>"
            )
            + "</li>"
            for line, name in view.lines
        )
        parts.append(para(escape(t.gettext("portal.linked_lines"))) + f"<ul>{items}</ul>")
    else:
        parts.append(para(escape(t.gettext("portal.no_lines"))))
    parts.append(para(escape(t.gettext("portal.how_to_link"))))
    form = LineView(
        view.member_id,
        view.domain,
        view.origin,
        0,
        view.action_url,
        view.form_token,
        view.auth_id,
        language=view.language,
    )
    parts.append(users_form(t, view))
    parts.append(para(button(form, "setup", t.gettext("button.repair"))))
    parts.append(ids(t, view.member_id, None))
    title = t.gettext("portal.title", domain=view.domain)
    return page(title, "".join(parts), language=t.language, frame_origin=view.origin)
