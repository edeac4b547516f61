"""The connector's settings page for one open line: the WhatsApp numbers, by phone number
and account name, with their provider, state and what to do about it.

While a number shown here is not connected, the page asks for its state again every few
seconds (`settings.js`, shipped in this package and inlined under the page's CSP nonce)
and swaps in the part of the page that shows numbers and states (`live_html`), so a new
QR code and a number that became connected appear without a reload. It stops once the
number linked here is connected (`needs_polling`), or when the server refuses (the form
token is 30 minutes old). The page works without JavaScript: "Refresh" shows the same.
"""

from __future__ import annotations

from functools import cache
from html import escape
from importlib import resources

from starlette.responses import HTMLResponse

from gateway import AccountState, AccountStatus

from .pages import (
    ChannelView,
    LineView,
    banners,
    button,
    history_field,
    html_of,
    ids,
    is_down,
    muted,
    page,
    para,
    problem_banner,
    state_html,
    users_form,
)
from .texts import Translator

#: Provider names as their vendors write them (not translated).
PROVIDER_TITLES = {
    "greenapi": "GREEN-API",
    "chatapi": "Chat API",
    "cloudapi": "WhatsApp Cloud API",
}
#: Seconds between two refreshes of a waiting page.
POLL_SECONDS = 3.0


def format_phone(digits: str) -> str:
    """`79876543210` → `+7 987 654-32-10` (Russia, Kazakhstan); other numbers `+<digits>`."""
    if len(digits) == 11 and digits.startswith("7"):
        return f"+7 {digits[1:4]} {digits[4:7]}-{digits[7:9]}-{digits[9:]}"
    return f"+{digits}"


def number_label(channel: str, state: AccountState) -> str:
    """What people call a number: its phone number and account name, as far as the provider
    told them; the gateway's name for it (`wa_green`) only when it told neither."""
    parts = [format_phone(state.phone)] if state.phone else []
    if state.name:
        parts.append(state.name)
    return " · ".join(parts) or channel


def provider_title(provider: str) -> str:
    return PROVIDER_TITLES.get(provider, provider)


#: States of a number not linked yet that change while the admin waits (a scan, a start).
_WAITING = frozenset({AccountStatus.NEEDS_QR, AccountStatus.STARTING})


def needs_polling(view: LineView) -> bool:
    """Whether the page waits for something: a number linked here that is not connected,
    or, while none is linked, a number offered here that waits for its QR code or starts."""
    linked = [c for c in view.channels if c.linked_here]
    if linked:
        return any(c.state.status is not AccountStatus.CONNECTED for c in linked)
    return any(c.state.status in _WAITING for c in view.channels if not c.linked_elsewhere)


def _number(channel: ChannelView) -> str:
    label = number_label(channel.name, channel.state)
    # Under the number: its provider and the gateway's name for it (unless that is the label).
    names = (provider_title(channel.provider), "" if label == channel.name else channel.name)
    origin = " · ".join(p for p in names if p)
    label = escape(label)
    return f'<b class="number">{label}</b><br><span class="muted">{escape(origin)}</span>'


def _action(t: Translator, view: LineView, channel: ChannelView, linked: bool) -> str:
    reconnect = ""
    if channel.linked_here and view.parked:
        label = t.gettext("button.reconnect")
        reconnect = button(view, "link", label, channel.name, primary=True) + " "
    if channel.linked_here and channel.fixed:
        return reconnect + muted(t.gettext("line.fixed_in_settings"))
    if channel.linked_here:
        return reconnect + button(view, "unlink", t.gettext("button.unlink"), channel.name)
    if channel.linked_elsewhere:
        return muted(t.gettext("line.linked_elsewhere", where=channel.linked_elsewhere))
    if linked:
        return muted(t.gettext("line.unlink_first"))
    field = history_field(t, view)
    return button(view, "link", t.gettext("button.link"), channel.name, primary=True, field=field)


def live_html(t: Translator, view: LineView) -> str:
    """The part of the page that a refresh replaces: banners, what is linked, the numbers."""
    down = [
        (number_label(c.name, c.state), c.state)
        for c in view.channels
        if c.linked_here and is_down(c.state)
    ]
    parts = banners(t, down)
    linked = [c for c in view.channels if c.linked_here]
    if linked:
        labels = ", ".join(number_label(c.name, c.state) for c in linked)
        parts.append(para(html_of(t.gettext("line.linked_to"), names=f"<b>{escape(labels)}</b>")))
    else:
        parts.append(para(escape(t.gettext("line.not_linked"))))
    if not view.channels:
        parts.append(para(escape(t.gettext("line.no_channels")), "muted"))
        return "".join(parts)
    rows = [
        f'<tr data-channel="{escape(c.name, quote=True)}" data-state="{c.state.status.value}">'
        f'<td>{_number(c)}</td><td class="state">{state_html(t, c.state)}</td>'
        f"<td>{_action(t, view, c, bool(linked))}</td></tr>"
        for c in view.channels
    ]
    headers = (t.gettext("line.column.channel"), t.gettext("line.column.state"), "")
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in headers)
    parts.append(f'<table class="numbers"><tr>{head}</tr>' + "".join(rows) + "</table>")
    return "".join(parts)


def _poll_form(t: Translator, view: LineView) -> str:
    """The fields the page's script posts to ask for the state (hidden; never submitted)."""
    fields = (
        ("action", "state"),
        ("channel", ""),
        ("form_token", view.form_token),
        ("AUTH_ID", view.auth_id),
        ("LANG", view.language),
    )
    inputs = "".join(
        f'<input type="hidden" name="{name}" value="{escape(value, quote=True)}">'
        for name, value in fields
    )
    stopped = escape(t.gettext("line.refresh_stopped"), quote=True)
    return (
        f'<form id="poll" hidden method="post" action="{escape(view.action_url, quote=True)}"'
        f' data-stopped="{stopped}">{inputs}</form>'
    )


@cache
def _script() -> str:
    return resources.files(__package__).joinpath("settings.js").read_text("utf-8")


def line_page(t: Translator, view: LineView, poll_seconds: float = POLL_SECONDS) -> HTMLResponse:
    parts = [problem_banner(t, *view.problem)] if view.problem else []
    if view.notice:
        parts.append(f'<p class="notice" role="status">{escape(view.notice)}</p>')
    if view.error:
        parts.append(f'<p class="notice error" role="alert">{escape(view.error)}</p>')
    if view.parked:
        paused = html_of(t.gettext("line.paused"), reason=escape(view.parked))
        parts.append(f'<p class="notice error">{paused}</p>')
    polling = needs_polling(view)
    parts.append(
        f'<div id="live" aria-live="polite" data-poll="{int(polling)}"'
        f' data-poll-ms="{int(poll_seconds * 1000)}">{live_html(t, view)}</div>'
    )
    parts.append(_poll_form(t, view))
    parts.append(users_form(t, view))
    parts.append('<p id="poll-note" class="muted" role="status"></p>')
    parts.append(para(button(view, "refresh", t.gettext("button.refresh"))))
    parts.append(ids(t, view.member_id, view.line))
    title = t.gettext("line.title", line=view.line, domain=view.domain)
    return page(
        title,
        "".join(parts),
        language=t.language,
        frame_origin=view.origin,
        own_script=_script(),
    )
