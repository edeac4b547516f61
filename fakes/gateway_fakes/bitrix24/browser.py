"""What the administrator's browser does with the connector's settings page."""

from __future__ import annotations

import html
import re

_FORM = re.compile(r"<form\b.*?</form>", re.S)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]*)" value="([^"]*)"')


def form_fields(page: str, action: str, channel: str = "") -> dict[str, str]:
    """The fields a click on the page's `action` button (for `channel`) submits."""
    for form in _FORM.findall(page):
        fields = {
            html.unescape(name): html.unescape(value) for name, value in _HIDDEN.findall(form)
        }
        if fields.get("action") == action and fields.get("channel") == channel:
            return fields
    raise LookupError(f"the settings page has no {action!r} form for {channel!r}")
