"""HTTP face of `FakeGreenApi`: `/{v3/}waInstance{id}/{method}/{token}[/{extra}]` (spec 2.1)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.testing.fake_common import (
    FAULT_STATUS,
    MIME_EXT,
    FakeHttpError,
    Fault,
    Magic,
    Result,
    Upload,
    dispatch,
    magic_of,
    mime_of,
)
from gateway.testing.fake_delivery import (
    control_routes,
    delivery_lifespan,
)

from . import journals
from .incoming import DEFAULT_COUNT, DEFAULT_MINUTES
from .messages import (
    contact_data,
    error_body,
    file_data,
    location_data,
    quota_body,
    text_data,
    vcard,
)

if TYPE_CHECKING:
    from .core import FakeGreenApi

Endpoint = Callable[["FakeGreenApi", dict[str, Any], dict[str, Upload]], Result]
# lower-case name -> (canonical name, HTTP verbs, handler); GREEN matches names loosely.
ENDPOINTS: dict[str, tuple[str, tuple[str, ...], Endpoint]] = {}
MAX_TEXT = 20_000


def endpoint(name: str, *verbs: str) -> Callable[[Endpoint], Endpoint]:
    def register(func: Endpoint) -> Endpoint:
        ENDPOINTS[name.lower()] = (name, verbs or ("POST",), func)
        return func

    return register


def invalid(details: str) -> FakeHttpError:
    # "path" is filled in by the dispatcher, which knows the request.
    return FakeHttpError(
        400, {"statusCode": 400, "message": f"Validation failed. Details: {details}"}
    )


def chat_param(params: dict[str, Any]) -> str:
    chat_id = params.get("chatId")
    if not isinstance(chat_id, str) or not re.fullmatch(r"\d+(-\d+)?@(c|g)\.us", chat_id):
        raise invalid('"chatId" must be like 79001234567@c.us or ...@g.us')
    return chat_id


def str_param(params: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise invalid(f'"{name}" is required')
        return ""
    if not isinstance(value, str):
        raise invalid(f'"{name}" must be a string')
    return value


def number_param(params: dict[str, Any], name: str) -> float:
    value = params.get(name)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise invalid(f'"{name}" must be a number')


def file_name_param(params: dict[str, Any], fallback: str = "") -> str:
    name = str_param(params, "fileName", required=not fallback) or fallback
    if "." not in name:
        raise invalid('"fileName" must include the file extension')
    return name


# -- sending (spec 2.2) --------------------------------------------------------------------


@endpoint("sendMessage")
def send_message(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    chat_id = chat_param(params)
    text = str_param(params, "message")
    if len(text) > MAX_TEXT:
        raise invalid(f'"message" is longer than {MAX_TEXT} characters')
    return fake.send("sendMessage", chat_id, params, text_data(text), text=text)


@endpoint("sendFileByUrl")
def send_file_by_url(
    fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]
) -> Result:
    chat_id = chat_param(params)
    url = str_param(params, "urlFile")
    if not url.startswith(("http://", "https://")):
        raise invalid('"urlFile" must be an http(s) URL')
    name = file_name_param(params)
    caption = str_param(params, "caption", required=False)
    data = file_data(url, name, mime_of(name), caption)
    return fake.send("sendFileByUrl", chat_id, params, data, text=caption, url_file=url)


@endpoint("sendFileByUpload")
def send_file_by_upload(
    fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]
) -> Result:
    upload = files.get("file")
    if upload is None:
        raise invalid('"file" is required (multipart/form-data)')
    chat_id = chat_param(params)
    name = file_name_param(params, upload.filename)
    caption = str_param(params, "caption", required=False)
    mime = upload.content_type if "/" in upload.content_type else mime_of(name)
    url = fake.media.put(f"{fake.id_instance}/{fake.ids.hex(32).lower()}/{name}", upload.data, mime)
    data = file_data(url, name, mime, caption)
    return fake.send("sendFileByUpload", chat_id, params, data, text=caption, url_file=url)


@endpoint("uploadFile")
def upload_file(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    upload = files.get("body") or files.get("file")
    if upload is None or not upload.data:
        raise invalid("the request body must be the file")
    ext = MIME_EXT.get(upload.content_type, "bin")
    name = upload.filename or f"{fake.ids.hex(32).lower()}.{ext}"
    return Result({"urlFile": fake.media.put(f"{fake.id_instance}/{name}", upload.data)})


@endpoint("sendLocation")
def send_location(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    chat_id = chat_param(params)
    lat, lng = number_param(params, "latitude"), number_param(params, "longitude")
    name = str_param(params, "nameLocation", required=False)
    address = str_param(params, "address", required=False)
    return fake.send("sendLocation", chat_id, params, location_data(lat, lng, name, address))


@endpoint("sendContact")
def send_contact(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    chat_id = chat_param(params)
    contact = params.get("contact")
    if not isinstance(contact, dict):
        raise invalid('"contact" must be an object')
    phone = contact.get("phoneContact")
    if isinstance(phone, bool) or not isinstance(phone, int):
        raise invalid('"contact.phoneContact" must be an integer')
    parts = [contact.get(k) for k in ("firstName", "middleName", "lastName")]
    name = " ".join(str(p) for p in parts if p) or str(phone)
    card = vcard(name, str(phone), str(contact.get("company") or ""))
    return fake.send("sendContact", chat_id, params, contact_data(name, card))


@endpoint("readChat")
def read_chat(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    chat_id = chat_param(params)
    fake.reads.append((chat_id, str_param(params, "idMessage", required=False) or None))
    return Result({"setRead": True})


@endpoint("editMessage")
def edit_message(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    chat_id = chat_param(params)
    text = str_param(params, "message")
    if len(text) > MAX_TEXT:
        raise invalid(f'"message" is longer than {MAX_TEXT} characters')
    return fake.edit(chat_id, str_param(params, "idMessage"), text)


@endpoint("deleteMessage")
def delete_message(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    return fake.delete(chat_param(params), str_param(params, "idMessage"))


@endpoint("getAvatar")
def get_avatar(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    """GetAvatar: 200 with `existsWhatsapp` and `urlAvatar` ("" when none is set); a chat id
    it cannot read is answered 200 too, with `reason` (green-api.com docs, GetAvatar)."""
    fake.avatar_calls.append(str(params.get("chatId")))
    try:
        chat_id = chat_param(params)
    except FakeHttpError:
        return Result({"existsWhatsapp": False, "urlAvatar": "", "reason": "bad request data"})
    exists = magic_of(chat_id.split("@", 1)[0]) is not Magic.NO_ACCOUNT
    return Result({"existsWhatsapp": exists, "urlAvatar": fake.avatars.get(chat_id, "")})


@endpoint("checkWhatsapp")
def check_whatsapp(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    phone = params.get("phoneNumber")
    if isinstance(phone, bool) or not isinstance(phone, int):
        raise invalid('"phoneNumber" must be an integer')
    return Result({"existsWhatsapp": magic_of(str(phone)) is not Magic.NO_ACCOUNT})


# -- account (spec 2.3) --------------------------------------------------------------------


@endpoint("getStateInstance", "GET")
def get_state(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    return Result({"stateInstance": fake.state})


@endpoint("qr", "GET")
def qr(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    if fake.state == "notAuthorized":
        return Result({"type": "qrCode", "message": fake.qr_base64()})
    if fake.state == "authorized":
        return Result({"type": "alreadyLogged", "message": "instance account already authorized"})
    return Result({"type": "error", "message": f"instance is in state {fake.state}"})  # [U]


@endpoint("getWaSettings", "GET")
def get_wa_settings(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    # The docs: avatar, phone and deviceId are empty unless the instance is authorized.
    authorized = fake.state == "authorized"
    phone = fake.me_id.split("@")[0] if authorized else ""
    return Result(
        {
            "avatar": "",
            "phone": phone,
            "stateInstance": fake.state,
            "deviceId": f"{phone}:8@s.whatsapp.net" if authorized else "",
        }
    )


@endpoint("getSettings", "GET")
def get_settings(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    return Result(fake.settings.as_json())


@endpoint("setSettings")
def set_settings(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    if not params:
        raise invalid("at least one setting must be given")
    try:
        fake.settings.update(params)
    except ValueError as exc:
        raise invalid(str(exc)) from None
    # Spec 2.3: setSettings reboots the instance (applied at once here, not within 5 min).
    fake.reboot()
    return Result({"saveSettings": True})


@endpoint("reboot", "GET")
def reboot(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    fake.reboot()
    return Result({"isReboot": True})


@endpoint("logout", "GET")
def logout(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    fake.logout()
    return Result({"isLogout": True})


# -- journals and the send queue -----------------------------------------------------------


@endpoint("lastOutgoingMessages", "GET")
def last_outgoing(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    try:
        minutes = int(params.get("minutes", 1440))
    except ValueError:
        raise invalid('"minutes" must be an integer') from None
    return Result(journals.outgoing_journal(fake, minutes))


@endpoint("showMessagesQueue", "GET")
def show_queue(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    return Result(journals.send_queue(fake))


# -- receiving by polling (spec 2.5) -------------------------------------------------------


@endpoint("receiveNotification", "GET")
def receive(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    """The head of the queue until deleted; answers at once (no long-poll wait)."""
    if "receiveTimeout" in params:
        try:
            timeout = int(params["receiveTimeout"])
        except ValueError:
            raise invalid('"receiveTimeout" must be an integer') from None
        if not 5 <= timeout <= 60:
            raise invalid('"receiveTimeout" must be between 5 and 60')
    if fake.settings.webhookUrl:
        # [U] exact behaviour; the spec says polling works only without webhookUrl.
        raise invalid("receiveNotification is unavailable while webhookUrl is set")
    head = fake.notifications.head()
    return Result(None if head is None else {"receiptId": head.receipt_id, "body": head.body})


@endpoint("deleteNotification", "DELETE")
def delete(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    try:
        receipt = int(params.get("_extra", ""))
    except ValueError:
        raise invalid("receiptId must be an integer path segment") from None
    return Result({"result": fake.notifications.delete(receipt)})


@endpoint("clearWebhooksQueue", "DELETE")
def clear_queue(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    wait = fake.last_queue_clear + 60 - fake.clock()
    if wait > 0:
        return Result(
            {"isCleared": False, "reason": "Too many requests", "leftTime": int(wait) + 1}
        )
    fake.last_queue_clear = fake.clock()
    fake.notifications.clear()
    return Result({"isCleared": True, "reason": ""})


# -- the incoming journal and chat histories (GREEN's Journals pages) ---------------------


def _count(params: dict[str, Any], name: str, default: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise invalid(f'"{name}" must be an integer') from None
    if isinstance(value, bool) or number < 0:
        raise invalid(f'"{name}" must be a positive integer')
    return number


@endpoint("lastIncomingMessages", "GET")
def last_incoming(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    minutes = _count(params, "minutes", DEFAULT_MINUTES)
    return Result(fake.incoming.last(minutes=minutes, now=fake.clock(), delay=fake.journal_delay))


@endpoint("getChatHistory")
def chat_history(fake: FakeGreenApi, params: dict[str, Any], files: dict[str, Upload]) -> Result:
    """Both journals of one chat, the last `count` messages, newest first."""
    chat_id = chat_param(params)
    count = _count(params, "count", DEFAULT_COUNT)
    now = fake.clock()
    incoming = [i for i in fake.incoming.shown(now, fake.journal_delay) if i["chatId"] == chat_id]
    outgoing = [o for o in journals.outgoing_journal(fake, 10**7) if o["chatId"] == chat_id]
    both = sorted([*incoming, *reversed(outgoing)], key=lambda item: item["timestamp"])
    return Result([dict(item) for item in reversed(both[-count:] if count else [])])


# -- app -----------------------------------------------------------------------------------


def build_app(fake: FakeGreenApi, *, deliver_every: float | None = None) -> Starlette:
    def fault_result(fault: Fault, method: str) -> Result:
        if fault.kind == "quota":
            return Result(quota_body(method), 466)
        status = FAULT_STATUS[fault.kind]
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
        body = error_body(
            status, f"fake {fault.kind}", f"/waInstance{fake.id_instance}/{method}", fake.clock
        )
        return Result(body, status, headers=headers)

    async def provider(request: Request) -> Response:
        raw_method = request.path_params["method"]
        found = ENDPOINTS.get(raw_method.lower())
        # Error bodies echo the path; never echo a token, right or wrong.
        path = re.sub(
            r"(/waInstance[^/]*/[^/]+/)[^/]+", r"\1{{apiTokenInstance}}", request.url.path
        )

        def check(params: dict[str, Any]) -> None:
            if request.path_params["id_instance"] != fake.id_instance:
                raise FakeHttpError(404, error_body(404, "Instance not found", path, fake.clock))
            if request.path_params["token"] != fake.api_token:
                raise FakeHttpError(401, error_body(401, "Unauthorized", path, fake.clock))
            if found is None:
                raise FakeHttpError(404, error_body(404, "Method not found", path, fake.clock))
            if request.method not in found[1]:
                raise FakeHttpError(405, error_body(405, "Method Not Allowed", path, fake.clock))
            extra = request.path_params.get("extra")
            if (extra is not None) != (found[0] == "deleteNotification"):
                raise FakeHttpError(404, error_body(404, "Not Found", path, fake.clock))

        async def handler(params: dict[str, Any], files: dict[str, Upload]) -> Result:
            assert found is not None  # check() ran first
            fake.tick()
            if "extra" in request.path_params:
                params["_extra"] = request.path_params["extra"]
            try:
                return found[2](fake, params, files)
            except FakeHttpError as exc:
                if isinstance(exc.body, dict) and exc.status == 400:
                    exc.body.setdefault(
                        "timestamp", error_body(400, "", path, fake.clock)["timestamp"]
                    )
                    exc.body.setdefault("path", path)
                raise

        return await dispatch(
            request,
            method=found[0] if found else raw_method,
            calls=fake.calls,
            faults=fake.faults,
            clock=fake.clock,
            handler=handler,
            fault_result=fault_result,
            check=check,
            hidden=("_extra",),
        )

    actions: dict[str, Callable[..., Any]] = {
        "customer_writes": fake.customer_writes,
        "phone_writes": fake.phone_writes,
        "customer_calls": fake.customer_calls,
        "set_state": fake.set_state,
        "scan_qr": fake.scan_qr,
        "reboot": fake.reboot,
        "mark_delivered": fake.mark_delivered,
        "mark_read": fake.mark_read,
        "mark_failed": fake.mark_failed,
        "emit_status": fake.emit_status,
        "redeliver": fake.redeliver,
        "deliver_webhooks": fake.deliver_webhooks,
        "fail_next": fake.faults.fail_next,
        "clear_faults": fake.faults.clear,
    }
    views: dict[str, Callable[[], Any]] = {
        "state": lambda: {"stateInstance": fake.state, "settings": fake.settings.as_json()},
        "sent": lambda: fake.sent,
        "calls": lambda: fake.calls,
        "pending": lambda: fake.pending_webhooks,
        "attempts": lambda: fake.notifications.attempts,
        "suppressed": lambda: fake.suppressed,
    }
    provider_routes = [
        Route(prefix + tail, provider, methods=["GET", "POST", "DELETE"])
        for prefix in ("", "/v3")
        for tail in (
            "/waInstance{id_instance}/{method}/{token}",
            "/waInstance{id_instance}/{method}/{token}/{extra}",
        )
    ]
    routes = [*provider_routes, fake.media.route(), *control_routes(actions, views)]
    lifespan = delivery_lifespan(fake.deliver_webhooks, deliver_every) if deliver_every else None
    return Starlette(routes=routes, lifespan=lifespan)
