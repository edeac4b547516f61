"""HTTP face of `FakeChatApi`: `/instance{ID}/{method}?token=...` (spec 1.1-1.4)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.testing.fake_common import (
    FAULT_STATUS,
    FakeHttpError,
    Fault,
    Result,
    Upload,
    dispatch,
    is_group,
    media_kind,
)
from gateway.testing.fake_delivery import (
    control_routes,
    delivery_lifespan,
)

from .model import vcard

if TYPE_CHECKING:
    from .core import FakeChatApi

Endpoint = Callable[["FakeChatApi", dict[str, Any], dict[str, Upload]], Result]
ENDPOINTS: dict[str, tuple[tuple[str, ...], Endpoint]] = {}


def endpoint(*names: str, verbs: tuple[str, ...] = ("POST",)) -> Callable[[Endpoint], Endpoint]:
    def register(func: Endpoint) -> Endpoint:
        for name in names:
            ENDPOINTS[name] = (verbs, func)
        return func

    return register


def bad(message: str) -> FakeHttpError:
    return FakeHttpError(400, {"error": message})


def text_param(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str | int | float) or str(value) == "":
        raise bad(f"{name} is required")
    return str(value)


def float_param(params: dict[str, Any], name: str) -> float:
    try:
        return float(text_param(params, name))
    except ValueError:
        raise bad(f"{name} must be a number") from None


def hosted_url(
    fake: FakeChatApi, source: Any, upload: Upload | None, filename: str, field: str
) -> str:
    """A URL for the file whether it came as a URL, a data URI or a multipart part."""
    if upload is not None:
        return fake.media.put(f"{fake.ids.hex(20)}/{filename}", upload.data, upload.content_type)
    if isinstance(source, str) and source.startswith("data:"):
        decoded = data_uri_bytes(source)
        if decoded is None:
            raise bad(f"{field} is not a valid base64 data URI")
        return fake.media.put(f"{fake.ids.hex(20)}/{filename}", decoded[0], decoded[1] or None)
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        return source
    raise bad(f"{field} must be an http(s) URL, a data URI or a file")


# -- sending (spec 1.2) --------------------------------------------------------------------


@endpoint("sendMessage", "message")
def send_message(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    return fake.send("sendMessage", params, type_="chat", body=text_param(params, "body"))


@endpoint("sendFile")
def send_file(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    filename = str(params.get("filename") or "")
    if "." not in filename:
        raise bad("filename with an extension is required")
    upload = files.get("body") or files.get("file")
    url = hosted_url(fake, params.get("body"), upload, filename, "body")
    caption = str(params["caption"]) if params.get("caption") else None
    return fake.send("sendFile", params, type_=media_kind(filename), body=url, caption=caption)


@endpoint("sendPTT")
def send_ptt(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    url = hosted_url(fake, params.get("audio"), files.get("audio"), "voice.ogg", "audio")
    return fake.send("sendPTT", params, type_="ptt", body=url)


@endpoint("sendLocation")
def send_location(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    lat, lng = float_param(params, "lat"), float_param(params, "lng")
    address = str(params.get("address") or "") or None
    # [U] the echo carries the address as caption; the body is "lat;lng" as for inbound.
    return fake.send("sendLocation", params, type_="location", body=f"{lat};{lng}", caption=address)


@endpoint("sendContact")
def send_contact(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    raw = params.get("contactId")
    ids = raw if isinstance(raw, list) else [raw] if raw else []
    if not ids or not all(isinstance(i, str) and i.endswith("@c.us") for i in ids):
        raise bad("contactId must be a '...@c.us' id or a list of them")
    cards = [vcard(i.split("@")[0], i.split("@")[0]) for i in ids]
    kind = "vcard" if len(cards) == 1 else "multi_vcard"
    return fake.send("sendContact", params, type_=kind, body="\n".join(cards))


@endpoint("sendVCard")
def send_vcard(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    card = text_param(params, "vcard")
    if not card.startswith("BEGIN:VCARD"):
        raise bad("vcard must be vCard 3.0 text")
    return fake.send("sendVCard", params, type_="vcard", body=card)


@endpoint("sendLink")
def send_link(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    return fake.send("sendLink", params, type_="chat", body=text_param(params, "body"))


@endpoint("readChat")
def read_chat(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    chat_id = fake.destination(params)
    fake.reads.append(chat_id)
    return Result({"read": True, "message": f"Chat {chat_id} is read", "chatId": chat_id})


# -- instance (spec 1.3, 1.4) --------------------------------------------------------------


@endpoint("status", verbs=("GET",))
def status(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    if str(params.get("no_wakeup", "")).lower() not in ("1", "true"):
        fake.wake()
    fake.tick()
    return Result(fake.status_json())


@endpoint("qr_code", verbs=("GET",))
def qr_code(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    fake.tick()
    if fake.status != "got qr code":
        # [U] the real error for "no QR now" is undocumented.
        raise FakeHttpError(404, {"error": f"No QR code: accountStatus is {fake.status!r}"})
    return Result(None, raw=fake.qr_png(), media_type="image/png")


@endpoint("logout")
def logout(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    fake.set_state("got qr code")
    return Result({"accountStatus": fake.status})


@endpoint("expiry")
def expiry(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    if fake.status == "got qr code":
        fake.refresh_qr()
    return Result({"accountStatus": fake.status})


@endpoint("retry", "takeover")
def retry(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    if fake.authenticated and fake.substatus != "normal":
        fake.set_state("authenticated", substatus="normal")
    return Result({"accountStatus": fake.status})


@endpoint("reboot")
def reboot(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    return Result({"success": True})


@endpoint("settings", verbs=("GET", "POST"))
def settings(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    changed: dict[str, Any] = {}
    if params:
        try:
            changed = fake.settings.update(params)
        except ValueError as exc:
            raise bad(str(exc)) from None
        return Result({**fake.settings.as_json(), "update": changed})
    return Result(fake.settings.as_json())


@endpoint("webhook", verbs=("GET", "POST"))
def webhook(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    if "webhookUrl" in params:
        fake.settings.update({"webhookUrl": params["webhookUrl"]})
        return Result(
            {"set": True, "message": "Webhook is set", "webhookUrl": fake.settings.webhookUrl}
        )
    return Result({"webhookUrl": fake.settings.webhookUrl})


@endpoint("messages", verbs=("GET",))
def messages(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    """Gap refill: messages numbered after `lastMessageNumber`, `limit` per page."""
    try:
        after = int(params.get("lastMessageNumber") or 0)
        limit = int(params.get("limit", 100))
        min_time = int(params["min_time"]) if params.get("min_time") else None
        max_time = int(params["max_time"]) if params.get("max_time") else None
    except ValueError:
        raise bad("lastMessageNumber, limit, min_time and max_time are integers") from None
    found = [m for m in fake.history if m.number > after]
    if params.get("chatId"):
        found = [m for m in found if m.item["chatId"] == params["chatId"]]
    if min_time is not None:
        found = [m for m in found if m.item["time"] >= min_time]
    if max_time is not None:
        found = [m for m in found if m.item["time"] <= max_time]
    if limit > 0:
        last = str(params.get("last", "")).lower() in ("1", "true")
        found = found[-limit:] if last else found[:limit]
    last_number = found[-1].number if found else after
    return Result({"messages": [m.item for m in found], "lastMessageNumber": last_number})


@endpoint("dialogs", verbs=("GET",))
def dialogs(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    chats: dict[str, dict[str, Any]] = {}
    for stored in fake.history:
        chat_id = stored.item["chatId"]
        chats[chat_id] = {
            "id": chat_id,
            "name": stored.item["chatName"],
            "image": "",
            "metadata": {"isGroup": is_group(chat_id), "participants": [], "groupInviteLink": None},
            "last_time": stored.item["time"],
        }
    return Result({"dialogs": sorted(chats.values(), key=lambda d: -int(d["last_time"]))})


@endpoint("showMessagesQueue", verbs=("GET",))
def show_queue(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    queued = [
        {
            "id": s.id,
            "body": s.body,
            "type": s.type,
            "lastTry": None,
            "metadata": {"chatId": s.chat_id},
        }
        for s in fake.queued()
    ]
    return Result({"totalMessages": len(queued), "first100": queued[:100]})


@endpoint("clearMessagesQueue")
def clear_queue(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    cleared = fake.queued()
    for sent in cleared:
        sent.status = "cleared"
    return Result({"message": f"Cleared {len(cleared)} messages", "cleared": len(cleared)})  # [U]


@endpoint("webhookStatus", verbs=("GET",))
def webhook_status(fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    return Result(fake.webhook_status(text_param(params, "msgId")))


@endpoint("instanceStatuses", verbs=("GET",))
def instance_statuses(
    fake: FakeChatApi, params: dict[str, Any], files: dict[str, Upload]
) -> Result:
    return Result({"data": list(fake.status_history)})


# -- app -----------------------------------------------------------------------------------


def fault_result(fault: Fault, method: str) -> Result:
    status = 402 if fault.kind == "quota" else FAULT_STATUS[fault.kind]
    headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
    return Result({"error": f"fake {fault.kind} on {method}"}, status, headers=headers)


def build_app(fake: FakeChatApi, *, deliver_every: float | None = None) -> Starlette:
    async def provider(request: Request) -> Response:
        method = request.path_params["method"]
        found = ENDPOINTS.get(method)

        def check(params: dict[str, Any]) -> None:
            if request.path_params["instance_id"] != fake.instance_id:
                raise FakeHttpError(404, {"error": "Instance not found"})  # [U]
            if request.query_params.get("token") != fake.token:
                raise FakeHttpError(
                    401, {"error": "Wrong token. Please provide token as a GET parameter."}
                )
            if found is None:
                raise FakeHttpError(404, {"error": f"Unknown method {method!r}"})
            if request.method not in found[0]:
                raise FakeHttpError(405, {"error": f"{method} accepts {'/'.join(found[0])}"})

        async def handler(params: dict[str, Any], files: dict[str, Upload]) -> Result:
            assert found is not None  # check() ran first
            params.pop("token", None)
            return found[1](fake, params, files)

        return await dispatch(
            request,
            method=method,
            calls=fake.calls,
            faults=fake.faults,
            clock=fake.clock,
            handler=handler,
            fault_result=fault_result,
            check=check,
            hidden=("token",),
        )

    actions: dict[str, Callable[..., Any]] = {
        "customer_writes": fake.customer_writes,
        "phone_writes": fake.phone_writes,
        "set_state": fake.set_state,
        "scan_qr": fake.scan_qr,
        "mark_delivered": fake.mark_delivered,
        "mark_read": fake.mark_read,
        "ack": fake.ack,
        "redeliver": fake.redeliver,
        "deliver_webhooks": fake.deliver_webhooks,
        "fail_next": fake.faults.fail_next,
        "clear_faults": fake.faults.clear,
    }
    views: dict[str, Callable[[], Any]] = {
        "state": fake.status_json,
        "sent": lambda: fake.sent,
        "calls": lambda: fake.calls,
        "messages": lambda: [m.item for m in fake.history],
        "pending": lambda: fake.pending_webhooks,
        "attempts": lambda: fake.webhook_attempts,
    }
    routes = [
        Route("/instance{instance_id}/{method}", provider, methods=["GET", "POST", "DELETE"]),
        fake.media.route(),
        *control_routes(actions, views),
    ]
    lifespan = delivery_lifespan(fake.deliver_webhooks, deliver_every) if deliver_every else None
    return Starlette(routes=routes, lifespan=lifespan)


def data_uri_bytes(uri: str) -> tuple[bytes, str] | None:
    """`data:<mime>;base64,<...>` -> (bytes, mime); None for anything else."""
    match = re.match(r"data:([\w.+/-]+)?(;[^,]*)?;base64,(.*)$", uri, re.S)
    if not match:
        return None
    try:
        return base64.b64decode(match.group(3), validate=False), match.group(1) or ""
    except binascii.Error:
        return None
