"""What CRM users see of the SMS provider and the robots, from the plugin's catalogue.

Bitrix24 takes `NAME`/`DESCRIPTION` of senders and robots (and the names of robot
properties) as `{"ru": ..., "en": ...}` and shows each user their language; reports the
gateway writes on its own (notifications, chat notes) use the portal's language.
"""

from __future__ import annotations

from typing import Any

from .texts import CATALOGUE, N_

#: Languages sent in localized names: every language the catalogue has.
LANGUAGES = ("en", "ru")

KEYS = {
    "sender.name": N_("crm.sender.name"),
    "sender.description": N_("crm.sender.description"),
    "robot.send.name": N_("crm.robot.send.name"),
    "robot.send.description": N_("crm.robot.send.description"),
    "robot.wait.name": N_("crm.robot.wait.name"),
    "robot.wait.description": N_("crm.robot.wait.description"),
    "prop.phone": N_("crm.prop.phone"),
    "prop.text": N_("crm.prop.text"),
    "prop.channel": N_("crm.prop.channel"),
    "prop.template": N_("crm.prop.template"),
    "prop.template_params": N_("crm.prop.template_params"),
    "prop.timeout": N_("crm.prop.timeout"),
    "ret.status": N_("crm.ret.status"),
    "ret.message_id": N_("crm.ret.message_id"),
    "ret.error": N_("crm.ret.error"),
    "ret.reply_text": N_("crm.ret.reply_text"),
    "notify.failed": N_("crm.notify.failed"),
    "mirror.sent": N_("crm.mirror.sent"),
}


def localized(key: str, **values: Any) -> dict[str, str]:
    """Every language of one text, with `values` filled in."""
    return {lang: CATALOGUE.translator(lang).gettext(KEYS[key], **values) for lang in LANGUAGES}


def text(key: str, language: str | None = None, **values: Any) -> str:
    """One language of a text; English when the catalogue lacks `language`."""
    return CATALOGUE.translator(language).gettext(KEYS[key], **values)
