"""GREEN-API chat ids: what a conversation id becomes in a send, and what an id says.

Conversations that started on WhatsApp carry GREEN's own `chatId` and go back unchanged.
Ids typed by an operator or carried over from another provider may be `+7 900 123-45-67`,
`79001234567`, `79001234567@s.whatsapp.net` or a Russian/Kazakh national `89001234567`,
which WhatsApp does not deliver: those become `<digits>@c.us` (spec section 0). A peer id
is not assumed to be a phone: an id with an unknown `@suffix` (`@lid`) is passed through
for GREEN-API to judge.
"""

from __future__ import annotations

import re

from gateway import PermanentError, national_to_international

PERSON = "@c.us"
GROUP = "@g.us"
_PERSON_ALIASES = ("@c.us", "@s.whatsapp.net")
# Stories, broadcast lists and channels are not conversations anyone can answer.
_NOT_CHATS = ("@broadcast", "@newsletter")
_FORMATTING = re.compile(r"[\s()\-.]")
_GROUP_LOCAL = re.compile(r"\d+(-\d+)?")
_OTHER_ID = re.compile(r"[\w.:-]+@[a-z0-9.-]+")


def is_group(chat_id: str) -> bool:
    return chat_id.lower().endswith(GROUP)


def is_ignored_chat(chat_id: str) -> bool:
    """`status@broadcast` (stories) and other chats that are not conversations."""
    return chat_id.lower().endswith(_NOT_CHATS)


def phone_of(chat_id: str) -> str | None:
    """The phone number of a person's chat id, None for groups, `@lid` ids and the like."""
    local, _, suffix = chat_id.partition("@")
    if f"@{suffix.lower()}" in _PERSON_ALIASES and local.isdigit():
        return local
    return None


def chat_id_for(conversation_id: str, *, groups: bool) -> str:
    """The `chatId` to send to for `conversation_id`; PermanentError when none can be."""
    raw = conversation_id.strip()
    local, at, suffix = raw.partition("@")
    suffix = f"@{suffix.lower()}" if at else ""
    if suffix.endswith(_NOT_CHATS):
        raise PermanentError(f"{raw!r} is not a chat one can write to", code="invalid_recipient")
    if suffix == GROUP:
        if not groups:
            raise PermanentError(
                f"{raw!r} is a group chat and groups are switched off for this instance "
                "(set groups = true to write to groups)",
                code="groups_disabled",
            )
        if not _GROUP_LOCAL.fullmatch(local):
            raise PermanentError(f"{raw!r} is not a group chat id", code="invalid_recipient")
        return f"{local}{GROUP}"
    if suffix and suffix not in _PERSON_ALIASES:
        if not _OTHER_ID.fullmatch(f"{local}{suffix}"):
            raise PermanentError(f"{raw!r} is not a WhatsApp chat id", code="invalid_recipient")
        return f"{local}{suffix}"
    compact = _FORMATTING.sub("", local)
    if compact.startswith("+"):
        compact = compact[1:]
    elif compact.startswith("00"):
        compact = compact[2:]
    if not compact.isdigit() or not 5 <= len(compact) <= 15:
        raise PermanentError(
            f"{raw!r} is neither a WhatsApp chat id nor a phone number with country code",
            code="invalid_recipient",
        )
    return national_to_international(compact) + PERSON
