"""Chat ids and phone numbers: what Chat API calls a peer, and how a CRM may write one.

A conversation id is normally a chat id the provider gave us (`79001234567@c.us`,
`120363...@g.us`) and goes back unchanged. Only a bare number (a CRM starting a
conversation) is cleaned into digits. Ids on other domains (`@lid` privacy ids) are passed
through as chat ids: a peer id is not necessarily a phone number.
"""

from __future__ import annotations

import re

from gateway import phone_digits

PERSON_DOMAIN = "@c.us"
GROUP_DOMAIN = "@g.us"
_PHONE_DOMAINS = (PERSON_DOMAIN, "@s.whatsapp.net")
_CHAT_ID = re.compile(r"[\w.+:-]+@[\w.-]+\Z")
_GROUP_ID = re.compile(r"\d+(-\d+)?\Z")


def normalize_phone(text: str) -> str:
    """Digits with the country code: `+7 (900) 123-45-67` and `89001234567` -> 79001234567.

    `gateway.phone_digits`; a `ValueError` (`NotAPhoneNumber`) for what is no number.
    """
    return phone_digits(text)


def destination(conversation_id: str) -> dict[str, str]:
    """The `chatId` or `phone` parameter that addresses a conversation in a send call."""
    peer = conversation_id.strip()
    if "@" not in peer:
        return {"phone": normalize_phone(peer)}
    if not _CHAT_ID.match(peer):
        raise ValueError(f"{conversation_id!r} is not a WhatsApp chat id")
    local, domain = peer.split("@", 1)
    domain = "@" + domain
    if domain in _PHONE_DOMAINS:
        # Same person, two spellings; Chat API knows only @c.us.
        return {"chatId": normalize_phone(local) + PERSON_DOMAIN}
    if domain == GROUP_DOMAIN and not _GROUP_ID.match(local):
        raise ValueError(f"{conversation_id!r} is not a WhatsApp group id")
    return {"chatId": peer}


def phone_of(chat_id: str | None) -> str | None:
    """The phone number inside a person's chat id; None for groups and privacy ids."""
    if not chat_id:
        return None
    for domain in _PHONE_DOMAINS:
        if chat_id.endswith(domain):
            local = chat_id[: -len(domain)]
            return local if local.isdigit() else None
    return None


def is_group(chat_id: str) -> bool:
    return chat_id.endswith(GROUP_DOMAIN)


def is_broadcast(chat_id: str) -> bool:
    """Stories (`status@broadcast`) and broadcast lists: not conversations."""
    return chat_id.endswith("@broadcast")
