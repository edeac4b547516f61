"""Why a message did not reach WhatsApp, in the portal's language.

The channel providers and the core say why in English (`DeliveryError.text`, a status's
`error_text`), for logs and integrators. Operators read the reason in the "Not delivered"
note of their chat, so the well-known codes are explained from the catalogue; the
provider's own words follow in brackets for whoever has to dig further.
"""

from __future__ import annotations

from .texts import N_, Translator

#: Error codes (Cloud API numbers, GREEN-API statuses, the core's) and their explanation.
REASONS = {
    # the customer's number cannot get WhatsApp messages
    "131026": N_("reason.no_whatsapp"),
    "noAccount": N_("reason.no_whatsapp"),
    # outside the 24-hour customer service window
    "131047": N_("reason.window_closed"),
    "noActiveSession": N_("reason.window_closed"),
    # WhatsApp limits the business number
    "yellowCard": N_("reason.spam_limited"),
    "131048": N_("reason.spam_limited"),
    "368": N_("reason.spam_limited"),
    "notInGroup": N_("reason.not_in_group"),
    "131051": N_("reason.unsupported"),
    "unsupported": N_("reason.unsupported"),
    "file_too_large": N_("reason.file_too_large"),
    # the core: an edit or delete of a message that never reached WhatsApp
    "unknown_message": N_("reason.unknown_message"),
    "failed": N_("notice.whatsapp_reported_failure"),
}


def explain(t: Translator, code: str | None, text: str | None) -> str:
    """The reason for an operator: the catalogue's words for a known `code`, then `text`."""
    key = REASONS.get(code or "")
    if key is None:
        return text or t.gettext("notice.whatsapp_reported_failure")
    explained = t.gettext(key)
    return f"{explained} ({text})" if text and text != explained else explained
