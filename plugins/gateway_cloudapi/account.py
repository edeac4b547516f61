"""The number's health, from `GET /{phone_number_id}` and from account webhooks.

A flagged or restricted number still sends (with limits), so it stays `connected` with a
detail saying what is wrong; only a banned, disconnected or blocked number stops.
"""

from __future__ import annotations

from typing import Any

from gateway import AccountState, AccountStatus

JSON = Any

HEALTH_FIELDS = (
    "display_phone_number,verified_name,status,quality_rating,messaging_limit_tier,health_status"
)
_OFFLINE = frozenset({"DISCONNECTED", "PENDING", "DELETED", "MIGRATED", "UNVERIFIED", "OFFLINE"})


def state_from_health(data: dict[str, JSON]) -> AccountState:
    """The state a phone-number node describes."""
    status = str(data.get("status") or "").upper()
    quality = str(data.get("quality_rating") or "").upper()
    health = found if isinstance(found := data.get("health_status"), dict) else {}
    can_send = str(health.get("can_send_message") or "").upper()
    problems = _health_problems(health)
    if status == "BANNED":
        return AccountState(AccountStatus.BANNED, detail=_join("the number is banned", problems))
    if status in _OFFLINE:
        offline = f"the number is {status.lower()} on the Cloud API (register it again)"
        return AccountState(AccountStatus.DISCONNECTED, detail=_join(offline, problems))
    if can_send == "BLOCKED":
        return AccountState(AccountStatus.ERROR, detail=_join("WhatsApp blocks sending", problems))
    notes: list[str] = []
    if status == "FLAGGED":
        notes.append("quality flagged: improve it within 7 days or the messaging limit drops")
    elif status == "RESTRICTED":
        notes.append("restricted: cannot start new conversations for now")
    if quality in ("YELLOW", "RED"):
        notes.append(f"quality rating {quality}")
    if can_send == "LIMITED":
        notes.append("sending is limited")
    detail = _join("; ".join(notes), problems) if notes or problems else None
    return AccountState(AccountStatus.CONNECTED, detail=detail or None)


def state_from_update(field: str, value: JSON) -> AccountState | None:
    """The state an `account_update` / `phone_number_quality_update` value announces."""
    if not isinstance(value, dict):
        return None
    event = str(value.get("event") or "").upper()
    if field == "phone_number_quality_update":
        limit = value.get("current_limit")
        if event == "FLAGGED":
            detail = "quality flagged: improve it within 7 days or the messaging limit drops"
            return AccountState(AccountStatus.CONNECTED, detail=detail)
        if event == "UNFLAGGED":
            return AccountState(AccountStatus.CONNECTED)
        if event in ("UPGRADE", "DOWNGRADE") and limit:
            return AccountState(AccountStatus.CONNECTED, detail=f"messaging limit now {limit}")
        return None
    if field != "account_update":
        return None
    if event == "DISABLED_UPDATE":
        ban = found if isinstance(found := value.get("ban_info"), dict) else {}
        states = ban.get("waba_ban_state") or []
        states = [str(s).upper() for s in (states if isinstance(states, list) else [states])]
        date = ban.get("waba_ban_date")
        if "DISABLE" in states:
            detail = "the WhatsApp Business Account was disabled" + (f" on {date}" if date else "")
            return AccountState(AccountStatus.BANNED, detail=detail)
        if "REINSTATE" in states:
            return AccountState(AccountStatus.CONNECTED, detail="the account was reinstated")
        if "SCHEDULE_FOR_DISABLE" in states:
            detail = "the account is scheduled to be disabled" + (f" on {date}" if date else "")
            return AccountState(AccountStatus.CONNECTED, detail=detail)
        return None
    if event == "ACCOUNT_RESTRICTION":
        kinds = [
            str(r.get("restriction_type"))
            for r in value.get("restriction_info") or []
            if isinstance(r, dict) and r.get("restriction_type")
        ]
        detail = "restricted" + (f": {', '.join(kinds)}" if kinds else "")
        return AccountState(AccountStatus.CONNECTED, detail=detail)
    if event == "ACCOUNT_VIOLATION":
        info = found if isinstance(found := value.get("violation_info"), dict) else {}
        kind = info.get("violation_type")
        detail = "policy violation" + (f": {kind}" if kind else "")
        return AccountState(AccountStatus.CONNECTED, detail=detail)
    if event in ("ACCOUNT_DELETED", "ACCOUNT_OFFBOARDED"):
        return AccountState(AccountStatus.DISCONNECTED, detail=f"account event {event}")
    if event == "ACCOUNT_RECONNECTED":
        return AccountState(AccountStatus.CONNECTED)
    return None


def update_number(value: JSON) -> str | None:
    """The display number an account webhook is about (digits), if it names one."""
    if not isinstance(value, dict):
        return None
    number = value.get("display_phone_number") or value.get("phone_number")
    digits = "".join(ch for ch in str(number or "") if ch.isdigit())
    return digits or None


def _health_problems(health: dict[str, JSON]) -> list[str]:
    found: list[str] = []
    for entity in health.get("entities") or []:
        if not isinstance(entity, dict):
            continue
        for error in entity.get("errors") or []:
            if isinstance(error, dict) and error.get("error_description"):
                found.append(str(error["error_description"]))
    return found


def _join(head: str, problems: list[str]) -> str:
    return " - ".join(part for part in (head, *problems) if part)
