"""`CloudApiProvider`: one WhatsApp business number on Meta's Cloud API as a channel.

Webhooks (`{public_url}/webhooks/{instance}`): the `hub.*` GET handshake answers the challenge
when the verify token matches; POSTs must carry `X-Hub-Signature-256` over the raw body with
the app secret. Anything else is refused and nothing is stored. Media arrive as signed
gateway links resolved on first fetch (`gateway_cloudapi.media`).

Sending: one message per `send` item, possibly in several parts (`gateway_cloudapi.outbound`),
paced under Meta's throughput and pair-rate limits (`gateway_cloudapi.ratelimit`). The 24-hour
window is checked locally first (`gateway_cloudapi.window`): outside it a text goes as the
configured template (`template_name`, its single body parameter filled with the text when
`template_text_parameter`), and anything else is refused with code 131047 without calling
Meta. Meta's own 131047 for a customer the gateway has no record of triggers the same
template fallback. A message that names a template (`extra["template"]`: a Bitrix24 robot)
goes as that template, checked against the account's approved ones first
(`gateway_cloudapi.templates`). Read statuses the CRM reports for customer messages mark
them read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import mimetypes
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import orjson
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from gateway import (
    AccountState,
    AccountStatus,
    AmbiguousError,
    Attachment,
    BadRequest,
    Capabilities,
    ChannelProvider,
    ConfigError,
    ConfigProblem,
    DeliveryError,
    DeliveryStatus,
    FetchError,
    ForbiddenAddress,
    InboundEvent,
    InstanceContext,
    Landing,
    MediaTooLarge,
    Message,
    MessageTemplate,
    Outcome,
    Outgoing,
    PermanentError,
    Sent,
    StatusNotice,
    TemporaryError,
    Unauthorized,
    WebhookRequest,
    WebhookResult,
    error_response,
    send_each,
)
from gateway_cloudapi.account import HEALTH_FIELDS, state_from_health
from gateway_cloudapi.client import GraphClient
from gateway_cloudapi.config import OPTIONAL, REQUIRED, SECRETS, parse_config
from gateway_cloudapi.errors import WINDOW_CLOSED, WINDOW_TEXT
from gateway_cloudapi.landed import Landings, tag, tagged
from gateway_cloudapi.media import LINK_PREFIX, LinkError, MediaLinks, MediaRef
from gateway_cloudapi.outbound import (
    MAX_BYTES,
    Part,
    contacts_object,
    filename_from_url,
    location_object,
    media_object,
    media_type,
    message_payload,
    plan_parts,
    template_object,
)
from gateway_cloudapi.phones import recipient
from gateway_cloudapi.ratelimit import SendPacer
from gateway_cloudapi.templates import TemplateBook
from gateway_cloudapi.webhooks import parse_body, signature_valid
from gateway_cloudapi.window import WindowBook

log = logging.getLogger("gateway_cloudapi")
JSON = Any
MEDIA_ID_SCHEME = "cloudapi-media:"
_DISPLAY_KEY = "display_number"


class CloudApiProvider(ChannelProvider):
    """A WhatsApp business phone number on the Cloud API (graph.facebook.com)."""

    name: ClassVar[str] = "cloudapi"
    description: ClassVar[str] = "WhatsApp Cloud API (Meta, graph.facebook.com)"
    required_settings: ClassVar[Mapping[str, str]] = REQUIRED
    optional_settings: ClassVar[Mapping[str, Any]] = OPTIONAL
    secret_settings: ClassVar[frozenset[str]] = SECRETS
    #: Meta posts webhooks from the internet, to an https callback URL only.
    public_url_needs: ClassVar[frozenset[str]] = frozenset({"internet", "https"})
    capabilities = Capabilities(
        media_kinds=frozenset({"image", "video", "audio", "voice", "document", "sticker", "file"}),
        quotes=True,
        edits=False,
        deletes=False,
        read_receipts=True,
        groups=False,
        max_text_length=4096,
        max_file_size=MAX_BYTES["document"],
        max_batch=1,
        idempotent_sends=False,
        # Sends carry a tag their statuses echo: a lost answer is found by it (landed.py).
        finds_sent=True,
        wants_statuses=True,
    )

    @classmethod
    def validate_settings(cls, config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        return parse_config(config)[1]

    def __init__(self, context: InstanceContext) -> None:
        super().__init__(context)
        settings, problems = parse_config(self.config)
        if settings is None:
            raise ConfigError(
                [ConfigProblem(f"channels.{self.instance}.{k}", m, f) for k, m, f in problems]
            )
        self.settings = settings
        #: Wall clock for the 24-hour window and link expiry (Meta's timestamps are UNIX time).
        self.clock: Callable[[], float] = time.time
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.client = GraphClient(context.http, settings)
        self.pacer = SendPacer(
            settings.messages_per_second,
            settings.pair_interval,
            max_hold=settings.max_hold_seconds,
        )
        self.windows = WindowBook(context.state)
        #: Messages already marked read by a reply (an operator often answers in several).
        self._marked: dict[str, None] = {}
        self.templates = TemplateBook(
            self.client, context.state, settings.waba_id, clock=lambda: self.clock()
        )
        self._syncing: asyncio.Task[None] | None = None
        self.links = MediaLinks(context, self.client, clock=lambda: self.clock())
        self.display_number: str | None = None
        self.landings = Landings(
            context.state,
            context.hub,
            self.instance,
            window=settings.confirm_window,
            clock=lambda: self.clock(),
        )
        self.capabilities = replace(
            self.capabilities,
            finds_sent=settings.confirm_window > 0,
            settle_seconds=self.landings.settle,
        )

    # lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self.links.ready()
        await self.landings.start()
        if self.settings.waba_id:
            self._syncing = asyncio.create_task(
                self._sync_templates(), name=f"{self.instance}:templates"
            )
        stored = await self.context.state.get(_DISPLAY_KEY)
        self.display_number = stored if isinstance(stored, str) else None
        try:
            state = await self._health()
        except PermanentError as exc:
            # A refused token or number will not fix itself: say so where /readyz shows it.
            raise PermanentError(
                f"the Cloud API refused the health check: {exc.text}", code=exc.code
            ) from None
        except TemporaryError as exc:
            log.warning("%s: number health unknown for now: %s", self.instance, exc)
            return
        key = f"cloudapi:{self.settings.phone_number_id}:health:{int(self.clock())}"
        await self.context.hub.emit(self.instance, [InboundEvent(key, state)])

    async def message_templates(self) -> list[MessageTemplate]:
        return [
            MessageTemplate(t.name, t.language, t.parameter_count)
            for t in await self.templates.all()
        ]

    async def stop(self) -> None:
        if self._syncing is not None:
            self._syncing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncing
            self._syncing = None

    async def _sync_templates(self) -> None:
        while True:
            try:
                await self.templates.sync()
            except DeliveryError as exc:
                log.warning("%s: could not sync message templates: %s", self.instance, exc)
            await asyncio.sleep(self.settings.template_sync_minutes * 60.0)

    async def account_state(self) -> AccountState:
        try:
            return await self._health()
        except PermanentError as exc:
            return AccountState(AccountStatus.ERROR, detail=exc.text)

    async def _health(self) -> AccountState:
        data = await self.client.phone_number(HEALTH_FIELDS)
        digits = "".join(ch for ch in str(data.get("display_phone_number") or "") if ch.isdigit())
        await self._learn_display_number(digits)
        name = data.get("verified_name")
        return replace(
            state_from_health(data),
            phone=digits or None,
            name=name if isinstance(name, str) and name else None,
        )

    async def _learn_display_number(self, digits: str | None) -> None:
        if digits and digits != self.display_number:
            self.display_number = digits
            await self.context.state.put(_DISPLAY_KEY, digits)

    def setup_instructions(self) -> list[str]:
        """What to paste into Meta's App Dashboard (webhooks cannot be set by API)."""
        url = self.context.hub.webhook_url(self.instance)
        return [
            "In the Meta App Dashboard: WhatsApp > Configuration > Webhook > Edit:",
            f"  Callback URL: {url}",
            f"  Verify token: {self.settings.verify_token}",
            "Then subscribe the webhook fields: messages, account_update, "
            "phone_number_quality_update.",
            "The app secret (App settings > Basic) must be this instance's app_secret.",
            f"Events for phone numbers other than {self.settings.phone_number_id} are ignored: "
            "give each number its own instance and callback URL (a per-number webhook override).",
        ]

    # webhooks ----------------------------------------------------------------------------
    async def handle_webhook(self, request: WebhookRequest) -> WebhookResult:
        if request.subpath.startswith(LINK_PREFIX):
            return await self._serve_media(request)
        if request.subpath:
            raise BadRequest("no such page", status=404)
        if request.method in ("GET", "HEAD"):
            return self._verification(request)
        if request.method != "POST":
            raise BadRequest("webhooks are POSTed", status=405)
        header = request.headers.get("x-hub-signature-256")
        if not header:
            raise Unauthorized("missing X-Hub-Signature-256", status=401)
        if not signature_valid(request.body, header, self.settings.app_secret):
            raise Unauthorized("X-Hub-Signature-256 does not match the body", status=403)
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"body is not JSON: {exc}") from None
        if (
            not isinstance(body, dict)
            or body.get("object", "whatsapp_business_account") != "whatsapp_business_account"
        ):
            return WebhookResult()
        await self.links.ready()
        parsed = parse_body(
            body,
            phone_number_id=self.settings.phone_number_id,
            display_number=self.display_number,
            link=self.links.link,
        )
        if parsed.heard:
            await self.landings.heard()
        for wamid, label, customer in parsed.tagged:
            await self.landings.saw_status(wamid, label, customer)
        for wa_id, at in parsed.last_inbound.items():
            await self.windows.saw(wa_id, at, parsed.last_inbound_id.get(wa_id))
        await self._learn_display_number(parsed.display_number)
        if parsed.skipped:
            log.info("%s: skipped %s", self.instance, "; ".join(parsed.skipped))
        return WebhookResult(events=parsed.events)

    def _verification(self, request: WebhookRequest) -> WebhookResult:
        mode = request.query.get("hub.mode")
        token = request.query.get("hub.verify_token", "")
        challenge = request.query.get("hub.challenge")
        expected = self.settings.verify_token.encode()
        if (
            mode != "subscribe"
            or challenge is None
            or not hmac.compare_digest(token.encode(), expected)
        ):
            raise Unauthorized("wrong or missing hub.verify_token", status=403)
        return WebhookResult(response=PlainTextResponse(challenge))

    async def _serve_media(self, request: WebhookRequest) -> WebhookResult:
        if request.method not in ("GET", "HEAD"):
            raise BadRequest("media links are fetched with GET", status=405)
        await self.links.ready()
        try:
            ref = self.links.verify(request.subpath)
        except LinkError as exc:
            raise BadRequest(str(exc), status=exc.status) from None
        try:
            url = await self.links.stored_url(ref.media_id, ref.filename)
        except MediaTooLarge as exc:
            return WebhookResult(response=error_response(413, str(exc)))
        except TemporaryError as exc:
            busy = error_response(503, f"WhatsApp media unavailable for now: {exc.text}")
            busy.headers["Retry-After"] = str(int(exc.retry_after or 30))
            return WebhookResult(response=busy)
        except PermanentError as exc:
            status = 410 if exc.code in ("100", "33") else 502
            return WebhookResult(
                response=error_response(status, f"WhatsApp refused the file: {exc.text}")
            )
        except FetchError as exc:
            return WebhookResult(response=error_response(502, f"cannot download the file: {exc}"))
        response: Response = RedirectResponse(url, status_code=302)
        response.headers["Cache-Control"] = "private, no-store"
        return WebhookResult(response=response)

    async def resolve_media(self, attachment: Attachment) -> Attachment:
        """`attachment` with its Cloud API media (a link of ours or `cloudapi-media:{id}`)
        downloaded and re-hosted: the URL becomes a media-store URL. Other attachments come
        back unchanged. Raises `DeliveryError`/`FetchError` when WhatsApp cannot give it."""
        ref = self._media_ref(attachment.url)
        if ref is None:
            return attachment
        url = await self.links.stored_url(ref.media_id, attachment.filename or ref.filename)
        return replace(attachment, url=url)

    def _media_ref(self, url: str) -> MediaRef | None:
        if url.startswith(MEDIA_ID_SCHEME):
            return MediaRef(url.removeprefix(MEDIA_ID_SCHEME), 0, None)
        base = self.context.hub.webhook_url(self.instance, LINK_PREFIX)
        if not url.startswith(base):
            return None
        try:
            return self.links.verify(LINK_PREFIX + url.removeprefix(base))
        except LinkError as exc:
            raise FetchError(str(exc)) from None

    # sending -----------------------------------------------------------------------------
    async def send(self, batch: Sequence[Outgoing]) -> Sequence[Outcome]:
        return await send_each(batch, self._send_one)

    async def _send_one(self, item: Outgoing) -> Outcome:
        event = item.event
        if not isinstance(event, Message):
            return PermanentError(
                "the Cloud API cannot edit or delete sent messages", code="unsupported"
            )
        last = await self.windows.last_inbound(event.conversation_id)
        to = recipient(event.conversation_id, known_wa_id=last is not None)
        if last is None and to != event.conversation_id:
            last = await self.windows.last_inbound(to)
        named = event.extra.get("template")
        if isinstance(named, dict) and named.get("name"):
            return await self._send_named_template(to, named, tag(item.job_id, 0))
        parts = plan_parts(event)
        if not parts:
            return PermanentError(
                "the message has nothing WhatsApp can carry", code="empty_message"
            )
        if WindowBook.is_open(last, self.clock()) is False:
            return await self._outside_window(to, event, parts, tag(item.job_id, 0))
        return await self._send_parts(item, to, parts)

    async def _send_parts(self, item: Outgoing, to: str, parts: list[Part]) -> Outcome:
        state = self.context.state
        progress_key = f"progress:{item.job_id}"
        done: list[str] = []
        if len(parts) > 1:
            stored = await state.get(progress_key)
            done = [str(x) for x in stored] if isinstance(stored, list) else []
        wa_id: str | None = None
        for index, part in enumerate(parts):
            if index < len(done):
                continue
            quoted = item.quoted_target_id if index == 0 else None
            label = tag(item.job_id, index)
            try:
                await self._pace(to)
                payload = await self._payload(to, part, quoted)
                result = await self.client.send_message(tagged(payload, label))
            except DeliveryError as exc:
                if index == 0 and exc.code == WINDOW_CLOSED and self._template_fits(parts):
                    assert isinstance(item.event, Message)
                    # The refused send used no pair-rate slot at Meta: no pacing again.
                    return await self._send_template(to, item.event.text, label, pace=False)
                if exc.code == "131056":
                    self.pacer.penalize(to, max(self.settings.pair_interval, 6.0))
                return _partial(exc, index, len(parts))
            wamid, wa_id = self._accepted(result)
            done.append(wamid)
            if len(parts) > 1:
                await state.put(progress_key, done)
        if len(parts) > 1:
            await state.delete(progress_key)
        extra: dict[str, JSON] = {"wa_id": wa_id or to}
        if len(done) > 1:
            extra["parts"] = done
        if self.settings.read_on_reply:
            await self._read_on_reply(wa_id or to)
        return Sent(native_id=done[0], extra=extra)

    async def _read_on_reply(self, wa_id: str) -> None:
        """The operator answered: the customer's newest message is marked read, which
        WhatsApp shows as blue ticks on it and every earlier one. A courtesy: failing it
        fails nothing."""
        message_id = await self.windows.last_inbound_id(wa_id)
        if message_id is None or message_id in self._marked:
            return
        try:
            await self.client.mark_read(message_id)
        except DeliveryError as exc:
            log.info("%s: cannot mark %s read: %s", self.instance, message_id, exc)
            return
        self._marked[message_id] = None
        while len(self._marked) > 1000:
            del self._marked[next(iter(self._marked))]

    def _template_fits(self, parts: list[Part]) -> bool:
        return self.settings.template_name is not None and all(p.type == "text" for p in parts)

    async def _outside_window(
        self, to: str, event: Message, parts: list[Part], label: str
    ) -> Outcome:
        if self.settings.template_name is None:
            return PermanentError(WINDOW_TEXT, code=WINDOW_CLOSED)
        if not self._template_fits(parts):
            text = f"{WINDOW_TEXT}; the template carries text only, so this message was not sent"
            return PermanentError(text, code=WINDOW_CLOSED)
        return await self._send_template(to, event.text, label)

    async def _send_template(self, to: str, text: str, label: str, *, pace: bool = True) -> Outcome:
        name = self.settings.template_name
        assert name is not None
        parameter = text if self.settings.template_text_parameter else None
        obj = template_object(name, self.settings.template_language, parameter)
        if pace:
            await self._pace(to)
        payload = message_payload(to, "template", obj, None)
        wamid, wa_id = self._accepted(await self.client.send_message(tagged(payload, label)))
        return Sent(native_id=wamid, extra={"wa_id": wa_id or to, "template": name})

    async def _send_named_template(self, to: str, named: Mapping[str, Any], label: str) -> Outcome:
        """The template a CRM message names, with its parameters, checked before sending."""
        values = [str(v) for v in named.get("params") or ()]
        template = await self.templates.choose(
            str(named["name"]), str(named.get("language") or ""), values,
            self.settings.template_language,
        )  # fmt: skip
        obj: dict[str, JSON] = {
            "name": template.name,
            "language": {"code": template.language, "policy": "deterministic"},
        }
        components = template.components(values)
        if components:
            obj["components"] = components
        await self._pace(to)
        payload = message_payload(to, "template", obj, None)
        wamid, wa_id = self._accepted(await self.client.send_message(tagged(payload, label)))
        return Sent(native_id=wamid, extra={"wa_id": wa_id or to, "template": template.name})

    def _accepted(self, result: dict[str, JSON]) -> tuple[str, str | None]:
        wamid, wa_id = _accepted(result)
        self.landings.sent(wamid)
        return wamid, wa_id

    async def find_sent(self, batch: Sequence[Outgoing]) -> Sequence[Landing]:
        """Sends whose answer was lost, found by the tag their statuses echo (landed.py)."""
        return await self.landings.find(batch)

    async def _pace(self, to: str) -> None:
        booking = self.pacer.book(to)
        if not booking.booked:
            raise TemporaryError(
                f"held back {booking.wait:.1f} s by WhatsApp's rate limits",
                code="rate_limit",
                retry_after=booking.wait,
            )
        if booking.wait > 0:
            await self.sleep(booking.wait)

    async def _payload(self, to: str, part: Part, quoted: str | None) -> dict[str, JSON]:
        if part.type == "text":
            text = part.text or ""
            obj: JSON = {"preview_url": "http" in text, "body": text}
            return message_payload(to, "text", obj, quoted)
        if part.type == "location" and part.location is not None:
            return message_payload(to, "location", location_object(part.location), quoted)
        if part.type == "contacts":
            return message_payload(to, "contacts", contacts_object(part.contacts), quoted)
        attachment = part.attachment
        assert attachment is not None
        if self.settings.upload_media:
            kind, media_id, part = await self._upload(part, attachment)
            return message_payload(to, kind, media_object(kind, part, media_id=media_id), quoted)
        if not attachment.url.startswith(("https://", "http://")):
            raise PermanentError(
                "the file has no http(s) URL WhatsApp could fetch", code="invalid_media_url"
            )
        kind = media_type(part.type, attachment.mime_type, attachment.size)
        return message_payload(to, kind, media_object(kind, part, link=attachment.url), quoted)

    async def _upload(self, part: Part, attachment: Attachment) -> tuple[str, str, Part]:
        fetcher = self.context.fetcher
        limit = min(MAX_BYTES["document"], fetcher.max_bytes)
        try:
            fetched = await fetcher.fetch(attachment.url, max_bytes=limit)
        except ForbiddenAddress as exc:
            raise PermanentError(
                f"cannot upload the file: {exc}", code="media_url_forbidden"
            ) from None
        except FetchError as exc:
            raise TemporaryError(
                f"cannot download the file to upload it: {exc}", code="media_fetch"
            ) from None
        filename = (
            attachment.filename or fetched.filename or filename_from_url(attachment.url) or "file"
        )
        mime = (
            attachment.mime_type
            or fetched.mime_type
            or mimetypes.guess_type(filename)[0]
            or "application/octet-stream"
        )
        kind = media_type(part.type, mime, len(fetched.content))
        media_id = await self.client.upload_media(fetched.content, mime, filename)
        named = replace(part, attachment=replace(attachment, filename=filename))
        return kind, media_id, named

    # statuses from the CRM ---------------------------------------------------------------
    async def apply_status(self, notices: Sequence[StatusNotice]) -> Sequence[Outcome]:
        """An operator read a customer's message: show the customer blue ticks."""
        outcomes: list[Outcome] = []
        for notice in notices:
            if notice.update.status is not DeliveryStatus.READ:
                outcomes.append(None)
                continue
            try:
                await self.client.mark_read(notice.update.native_id)
            except PermanentError as exc:
                # Too old (30 days) or not a customer's message: nothing to mark.
                log.info("%s: cannot mark %s read: %s", self.instance, notice.update.native_id, exc)
                outcomes.append(None)
            except TemporaryError as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
        return outcomes


def _accepted(result: dict[str, JSON]) -> tuple[str, str | None]:
    """The wamid (and the customer's wa_id) of an accepted send."""
    messages = result.get("messages")
    first = messages[0] if isinstance(messages, list) and messages else None
    wamid = first.get("id") if isinstance(first, dict) else None
    if not isinstance(wamid, str) or not wamid:
        raise AmbiguousError("the Cloud API accepted the send without a message id")
    contacts = result.get("contacts")
    contact = contacts[0] if isinstance(contacts, list) and contacts else None
    wa_id = contact.get("wa_id") if isinstance(contact, dict) else None
    return wamid, str(wa_id) if wa_id else None


def _partial(error: DeliveryError, index: int, total: int) -> DeliveryError:
    """`error`, saying which parts went out when it stopped a multi-part message midway."""
    if index == 0 or not isinstance(error, PermanentError):
        # Temporary ones resume at this part on retry (the parts sent are remembered).
        return error
    return PermanentError(
        f"{error.text} (sent {index} of {total} parts before this)", code=error.code
    )
