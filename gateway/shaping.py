"""Outbound shaping: the core adapts each item to its destination's `Capabilities`, so no
provider has to split texts, link files it cannot take, or re-host another side's media.

Delivery hands every batch to `send` here instead of to `provider.send`. For each item:

1. attachments its source marked `rehost` are downloaded (with the source provider's
   `media_download` URL and headers, through the guarded fetcher) into the media store;
   one that can never be fetched (refused address, too large, 4xx) becomes a note in the
   text, one that may be fetchable later makes the item a `TemporaryError`;
2. files of a kind the destination does not take, or known to be larger than its
   `max_file_size`, become links in the text;
3. a quote the destination cannot show becomes a `»` line; a group message for a
   destination without groups names its author;
4. a text over `max_text_length` is split into several messages.

An item that became several messages is sent part by part, one `send` call each; the
parts already sent are remembered in the destination's state (`gateway:parts:{job_id}`),
so a retry after a failure in the middle sends only the rest. Its outcome is the first
part's `Sent` (so quotes and replies refer to the start), or the first failure.
Items that stay one message go to the provider in one call, as before.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence

from gateway.errors import DeliveryError, FetchError, PermanentError, TemporaryError
from gateway.models import Attachment, DeliveryStatus, Message
from gateway.providers import (
    Capabilities,
    Landing,
    Outcome,
    Outgoing,
    Provider,
    Sent,
    StatusNotice,
)

log = logging.getLogger("gateway.shaping")

PARTS_KEY = "gateway:parts:{job_id}"
#: How much of a quoted text a `»` line shows.
QUOTE_PREVIEW = 100


async def send(
    provider: Provider, batch: Sequence[Outgoing], instances: Mapping[str, Provider]
) -> Sequence[Outcome]:
    """`provider.send(batch)` with every item shaped to `provider.capabilities`."""
    plans: list[list[Outgoing] | DeliveryError] = []
    for item in batch:
        try:
            plans.append(await plan(item, provider, instances.get(item.source)))
        except DeliveryError as exc:
            plans.append(exc)
    outcomes: list[Outcome] = [None] * len(batch)
    single: list[int] = []

    async def flush() -> None:
        if not single:
            return
        parts = [plans[i][0] for i in single]  # type: ignore[index]
        results = await _call(provider, parts)
        for index, result in zip(single, results, strict=True):
            outcomes[index] = result
        single.clear()

    for index, item_plan in enumerate(plans):
        if isinstance(item_plan, DeliveryError):
            outcomes[index] = item_plan
        elif len(item_plan) == 1:
            single.append(index)
        else:
            await flush()  # what came before in the batch goes first: order per lane
            outcomes[index] = await _send_parts(provider, batch[index], item_plan)
    await flush()
    return outcomes


async def find_sent(provider: Provider, batch: Sequence[Outgoing]) -> Sequence[Landing]:
    """`provider.find_sent(batch)`, for items `send` sends as one message each.

    An item split into several parts shares its message id among them, so the destination
    could only say that some part landed: such an item is not asked about (a person looks).
    """
    answers: list[Landing | None] = []
    asked: list[Outgoing] = []
    for item in batch:
        event = item.event
        if isinstance(event, Message):
            capabilities = provider.capabilities
            shaped, _ = shape_message(event, capabilities, item.quoted_target_id)
            if len(split_message(shaped, capabilities.max_text_length)) > 1:
                answers.append(PermanentError("it was sent in several parts", code="SENT_IN_PARTS"))
                continue
        answers.append(None)
        asked.append(item)
    results = list(await provider.find_sent(asked)) if asked else []
    if len(results) != len(asked):
        raise TemporaryError(f"provider answered {len(results)} of {len(asked)} items")
    found = iter(results)
    return [answer if answer is not None else next(found) for answer in answers]


async def ask_whether_sent(provider: Provider, batch: Sequence[Outgoing]) -> list[Landing]:
    """`find_sent` that never raises: one answer per item, a provider's failure (an error,
    a short answer, a bug) being every item's answer."""
    try:
        answers = list(await find_sent(provider, batch))
        if len(answers) != len(batch):
            raise TemporaryError(f"provider answered {len(answers)} of {len(batch)} items")
    except DeliveryError as exc:
        answers = [exc] * len(batch)
    except Exception as exc:
        log.exception("%s.find_sent raised", provider.instance)
        answers = [TemporaryError(f"{type(exc).__name__}: {exc}")] * len(batch)
    return answers


async def apply_status(provider: Provider, notices: Sequence[StatusNotice]) -> Sequence[Outcome]:
    """`provider.apply_status`, without the `read` statuses it cannot show."""
    wanted = [provider.capabilities.read_receipts or not _is_read(n) for n in notices]
    if all(wanted):
        return list(await provider.apply_status(notices))
    shown = [n for n, keep in zip(notices, wanted, strict=True) if keep]
    results = iter(await provider.apply_status(shown) if shown else [])
    return [next(results, None) if keep else None for keep in wanted]


def _is_read(notice: StatusNotice) -> bool:
    return notice.update.status == DeliveryStatus.READ


async def plan(
    item: Outgoing, provider: Provider, source: Provider | None = None
) -> list[Outgoing]:
    """The sends that carry `item` to `provider`, in order (usually one)."""
    event = item.event
    if not isinstance(event, Message):
        return [item]
    capabilities = provider.capabilities
    if any(a.rehost for a in event.attachments):
        event = await rehost_media(event, provider, source)
    event, quoted_id = shape_message(event, capabilities, item.quoted_target_id)
    messages = split_message(event, capabilities.max_text_length)
    if len(messages) == 1 and messages[0] is item.event and quoted_id == item.quoted_target_id:
        return [item]
    return [
        dataclasses.replace(item, event=message, quoted_target_id=quoted_id if n == 0 else None)
        for n, message in enumerate(messages)
    ]


def shape_message(
    message: Message, capabilities: Capabilities, quoted_id: str | None
) -> tuple[Message, str | None]:
    """`message` as the destination can take it (files as links, quote and author in the
    text), and the quote id to send with it."""
    lines: list[str] = []
    if (quoted_id or message.quoted_text) and not capabilities.quotes:
        if message.quoted_text:
            lines.append("» " + _one_line(message.quoted_text, QUOTE_PREVIEW))
        quoted_id = None
    author = message.sender.name or message.sender.phone or message.sender.id
    if message.is_group and not capabilities.groups and author and not message.is_note:
        lines.append(f"{author}:")
    if message.text:
        lines.append(message.text)
    kept: list[Attachment] = []
    for attachment in message.attachments:
        if attachment.kind not in capabilities.media_kinds or (
            attachment.size is not None and attachment.size > capabilities.max_file_size
        ):
            lines.append(file_link(attachment))
        else:
            kept.append(attachment)
    text = "\n".join(lines)
    if text == message.text and len(kept) == len(message.attachments):
        return message, quoted_id
    return dataclasses.replace(message, text=text, attachments=tuple(kept)), quoted_id


def split_message(message: Message, limit: int) -> list[Message]:
    """`message`, or its text in pieces of at most `limit` characters followed by one
    message with its files, location and contacts."""
    if len(message.text) <= limit:
        return [message]
    pieces = split_text(message.text, limit)
    rest = dataclasses.replace(message, text="", quoted_native_id=None, quoted_text=None)
    messages = [
        dataclasses.replace(
            message,
            text=piece,
            attachments=(),
            location=None,
            contacts=(),
            native_id=message.native_id if n == 0 else f"{message.native_id}#{n + 1}",
            quoted_native_id=message.quoted_native_id if n == 0 else None,
            quoted_text=message.quoted_text if n == 0 else None,
        )
        for n, piece in enumerate(pieces)
    ]
    if rest.attachments or rest.location is not None or rest.contacts:
        messages.append(
            dataclasses.replace(rest, native_id=f"{message.native_id}#{len(pieces) + 1}")
        )
    return messages


def split_text(text: str, limit: int) -> list[str]:
    """`text` in pieces of at most `limit` characters, cut at a paragraph, line or word
    end in the second half of a piece where there is one."""
    limit = max(1, limit)
    pieces: list[str] = []
    while len(text) > limit:
        cut = -1
        for separator in ("\n\n", "\n", " "):
            cut = text.rfind(separator, limit // 2, limit)
            if cut > 0:
                break
        if cut <= 0:
            cut = limit
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text or not pieces:
        pieces.append(text)
    return pieces


def file_link(attachment: Attachment, reason: str | None = None) -> str:
    """A line naming a file and where to get it (or why it is missing)."""
    name = attachment.filename or attachment.kind
    if attachment.size is not None:
        name += f" ({_size(attachment.size)})"
    if reason:
        return f"📎 {name}: {reason}"
    return f"📎 {name}: {attachment.url}"


async def rehost_media(message: Message, destination: Provider, source: Provider | None) -> Message:
    """`message` with every `rehost` attachment moved to the media store (or a note)."""
    media = destination.context.media
    fetcher = destination.context.fetcher
    attachments: list[Attachment] = []
    notes: list[str] = []
    for attachment in message.attachments:
        if not attachment.rehost:
            attachments.append(attachment)
            continue
        try:
            where = await source.media_download(attachment) if source else None
            url = where.url if where else attachment.url
            headers = where.headers if where else {}
            attachments.append(await media.rehost_attachment(attachment, fetcher, url, headers))
        except FetchError as exc:
            if not exc.permanent:
                raise TemporaryError(f"cannot fetch an attachment: {exc}", code="media") from None
            log.warning("%s: an attachment cannot be fetched: %s", destination.instance, exc)
            notes.append(file_link(attachment, f"could not be fetched ({exc})"))
    text = "\n".join(part for part in (message.text, *notes) if part)
    return dataclasses.replace(message, text=text, attachments=tuple(attachments))


async def _call(provider: Provider, items: list[Outgoing]) -> list[Outcome]:
    try:
        outcomes = list(await provider.send(items))
    except DeliveryError as exc:
        return [exc] * len(items)
    if len(outcomes) != len(items):
        raise TemporaryError(f"provider returned {len(outcomes)} outcomes for {len(items)} items")
    return outcomes


async def _send_parts(provider: Provider, item: Outgoing, parts: list[Outgoing]) -> Outcome:
    state = provider.context.state
    key = PARTS_KEY.format(job_id=item.job_id)
    stored = await state.get(key)
    done: list[list[object]] = list(stored) if isinstance(stored, list) else []
    for part in parts[len(done) :]:
        [outcome] = await _call(provider, [part])
        if isinstance(outcome, DeliveryError):
            if isinstance(outcome, PermanentError):
                await state.delete(key)
            return outcome
        sent: list[object] = [outcome.native_id, dict(outcome.extra)] if outcome else ["", {}]
        done.append(sent)
        await state.put(key, done)
    await state.delete(key)
    first_id, first_extra = done[0]
    return Sent(str(first_id), first_extra if isinstance(first_extra, dict) else {})


def _one_line(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"
