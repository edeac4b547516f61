"""`POST /{phone_number_id}/messages`: validation, limits, the 24-hour window, acceptance."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ASYNC_CAPABLE, GraphError, param_error
from .payloads import MEDIA_KINDS
from .state import ReadReceipt, SentMessage

if TYPE_CHECKING:
    from .server import FakeCloudApi

JSON = Any

SEND_TYPES = frozenset(
    {"text", "image", "audio", "video", "document", "sticker", "location", "contacts"}
    | {"interactive", "template", "reaction"}
)
SENDABLE_MEDIA = MEDIA_KINDS - {"voice"}
MAX_TEXT = 4096
#: Meta echoes it in the message's status webhooks (`payloads.status_item`), nowhere else.
MAX_CALLBACK_DATA = 512


def normalize_number(raw: str) -> str:
    """Digits only: Meta accepts `+`, spaces, dashes and parentheses in `to`."""
    return "".join(ch for ch in raw if ch.isdigit())


def handle_messages(fake: FakeCloudApi, data: JSON) -> JSON:
    if not isinstance(data, dict):
        data = {}
    if data.get("messaging_product") != "whatsapp":
        raise param_error("The parameter messaging_product is required.")
    if data.get("status") == "read":
        return _mark_read(fake, data)
    to = data.get("to")
    if not isinstance(to, str) or not to.strip():
        raise param_error("The parameter to is required.")
    digits = normalize_number(to)
    if not 7 <= len(digits) <= 15:
        raise GraphError(131009, details=f"Invalid phone number: {to!r}")
    if data.get("recipient_type", "individual") != "individual":
        raise GraphError(131009, details="recipient_type must be 'individual'")
    msg_type = data.get("type", "text")  # Graph defaults a missing type to text
    if msg_type not in SEND_TYPES:
        raise param_error(f"Param type must be one of {{{', '.join(sorted(SEND_TYPES))}}}")
    _validate_object(fake, msg_type, data.get(msg_type))
    context = data.get("context")
    if context is not None and not (
        isinstance(context, dict) and isinstance(context.get("message_id"), str)
    ):
        raise GraphError(131009, details="context.message_id must be a message id")
    callback_data = data.get("biz_opaque_callback_data")
    if callback_data is not None and (
        not isinstance(callback_data, str) or len(callback_data) > MAX_CALLBACK_DATA
    ):
        raise param_error(
            f"Param biz_opaque_callback_data must be a string of at most {MAX_CALLBACK_DATA} "
            "characters."
        )
    wa_id = fake.wa_id_aliases.get(digits, digits)

    status = fake.phone.status
    if status in ("PENDING", "DISCONNECTED"):
        raise GraphError(133010)
    if status == "BANNED":
        raise GraphError(131031)

    late_code: int | None = None  # accepted now, reported later as a failed status
    magic = fake.magic_numbers.get(wa_id)
    if magic is not None and magic != 131047:
        if magic in ASYNC_CAPABLE and fake.error_delivery == "webhook":
            late_code = magic
        else:
            raise GraphError(magic)
    is_template = msg_type == "template"
    in_window = fake.window_open(wa_id)
    if not is_template and not in_window:
        if fake.error_delivery != "webhook":
            raise GraphError(131047)
        late_code = late_code or 131047
    if is_template and not in_window and status == "RESTRICTED":
        raise GraphError(368)
    category = _check_template(fake, data["template"]) if is_template else "service"
    now = fake.clock()
    fake.check_throughput(now)
    fake.check_pair_rate(wa_id, now)

    fake.consume_rate(wa_id, now)
    sent = SentMessage(
        id=fake.ids.outbound(wa_id),
        to=to,
        wa_id=wa_id,
        type=msg_type,
        request=data,
        at=now,
        category=category,
    )
    fake.sent.append(sent)
    if late_code is not None:
        fake.mark_failed(sent.id, late_code)
    elif fake.auto_sent_status:
        fake.mark_sent(sent.id)
    message: dict[str, JSON] = {"id": sent.id}
    if is_template:
        message["message_status"] = "accepted"
    return {
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": wa_id}],
        "messages": [message],
    }


def _missing(path: str) -> GraphError:
    return GraphError(131008, details=f"The parameter {path} is required.")


def _validate_object(fake: FakeCloudApi, msg_type: str, obj: JSON) -> None:
    if msg_type == "contacts":
        if not isinstance(obj, list) or not obj:
            raise _missing("contacts")
        for card in obj:
            if not isinstance(card, dict) or not card.get("name", {}).get("formatted_name"):
                raise _missing("contacts[0]['name']['formatted_name']")
        return
    if not isinstance(obj, dict):
        raise _missing(msg_type)
    if msg_type == "text":
        body = obj.get("body")
        if not isinstance(body, str) or not body:
            raise _missing("text['body']")
        if len(body) > MAX_TEXT:
            raise param_error(f"Param text['body'] must be at most {MAX_TEXT} characters long.")
    elif msg_type in SENDABLE_MEDIA:
        has_id, has_link = "id" in obj, "link" in obj
        if has_id == has_link:
            raise GraphError(131009, details=f"{msg_type} must have exactly one of id or link")
        if has_id and fake.live_media(str(obj["id"])) is None:
            raise GraphError(131009, details=f"Invalid media id: {obj['id']}")
        if has_link and not str(obj["link"]).startswith(("https://", "http://")):
            raise GraphError(131009, details=f"{msg_type}['link'] must be an http(s) URL")
    elif msg_type == "location":
        for key in ("latitude", "longitude"):
            if not isinstance(obj.get(key), int | float | str):
                raise _missing(f"location['{key}']")
    elif msg_type == "reaction":
        if not isinstance(obj.get("message_id"), str):
            raise _missing("reaction['message_id']")
    elif msg_type == "interactive":
        if "type" not in obj or "action" not in obj:
            raise _missing("interactive['action']")
    elif msg_type == "template":
        language = obj.get("language")
        if not obj.get("name"):
            raise _missing("template['name']")
        if not isinstance(language, dict) or not language.get("code"):
            raise _missing("template['language']['code']")


def _check_template(fake: FakeCloudApi, obj: dict[str, JSON]) -> str:
    """The pricing category; with no registered templates any template is accepted."""
    if not fake.templates:
        return "utility"
    name, language = str(obj["name"]), str(obj["language"]["code"])
    template = fake.templates.get((name, language))
    if template is None:
        raise GraphError(132001, details=f"template name ({name}) does not exist in {language}")
    if template.status == "PAUSED":
        raise GraphError(132015)
    if template.status == "DISABLED":
        raise GraphError(132016)
    given = sum(
        len(component.get("parameters", []))
        for component in obj.get("components", [])
        if isinstance(component, dict) and component.get("type") == "body"
    )
    if given != template.body_params:
        raise GraphError(
            132000,
            details=f"body: number of localizable_params ({given}) does not match the "
            f"expected number of params ({template.body_params})",
        )
    return template.category.lower()


def _mark_read(fake: FakeCloudApi, data: dict[str, JSON]) -> JSON:
    message_id = data.get("message_id")
    if not isinstance(message_id, str):
        raise param_error("The parameter message_id is required.")
    if message_id not in fake.inbound_ids:
        raise GraphError(100, "(#100) Invalid parameter", details=f"Unknown message {message_id}")
    typing = data.get("typing_indicator")
    fake.read_receipts.append(
        ReadReceipt(message_id, typing if isinstance(typing, dict) else None, fake.clock())
    )
    return {"success": True}
