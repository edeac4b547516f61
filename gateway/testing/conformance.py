"""The conformance kit: one pytest suite every channel provider runs against its own fake.

Write a `ChannelSubject` (or `CRMSubject`) that knows your fake (how someone writes, how the
fake sends its webhooks, what your API's error answers look like), then subclass
`ChannelConformance` (or `CRMConformance`):

    class TestMyChannel(ChannelConformance):
        @pytest.fixture
        def subject(self) -> MySubject:
            return MySubject()

The suite starts a real gateway (`running_gateway`) with your provider as instance
`subject`, a test provider (`test-crm` or `test-channel`, instance `peer`) on the other side
of route `main`, and checks that:

* redelivering a webhook stores nothing new (dedupe keys are stable);
* a request without the credential, or with a wrong one, is refused with a 4xx and stores
  nothing; a body with a broken item is refused whole (a 4xx, nothing stored) or taken
  whole (a 2xx), never a 5xx and never half;
* a send answered 429 or 5xx is a `TemporaryError`, a 4xx a `PermanentError` carrying the
  API's own text, a timeout after the request left an `AmbiguousError` (or a
  `TemporaryError` when the provider's sends are idempotent);
* no configured secret appears in any log record or error text (log redaction is active,
  as in production, so the test sees what an operator would);
* the webhook echoing a message the gateway sent is not taken for a customer's message;
* every file the gateway downloads from the provider's media URLs goes through the guarded
  fetcher (a CRM fetching the link it was given gets the file).

The fake is reached only through the fake network: faults (error answers, timeouts) are
injected in front of it by the kit, so the fake needs no fault knobs of its own.
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import AmbiguousError, PermanentError, TemporaryError
from gateway.models import Message as ChatMessage
from gateway.models import Sender
from gateway.providers import Outcome, Outgoing, Provider, Route, Sent
from gateway.settings import settings_from_mapping
from gateway.settings_check import secret_values
from gateway.testing import GatewayHarness, Recorder, running_gateway, send_shaped

__all__ = [
    "CRMConformance",
    "CRMSubject",
    "ChannelConformance",
    "ChannelSubject",
    "ProviderSubject",
    "WebhookCall",
]

INSTANCE = "subject"
#: How many answers in a row an injected error lasts (a provider may retry in the call).
FAULT_REPEATS = 8
#: The test provider on the other side of the route, and its webhook token.
PEER = "peer"
PEER_TOKEN = "conformance-peer-token"  # noqa: S105 (a test value)
_via_fetcher: contextvars.ContextVar[bool] = contextvars.ContextVar("via_fetcher", default=False)
_AUTH_HEADERS = re.compile(r"authorization|.*signature.*|.*token.*|.*secret.*|x-api-key")


@dataclass(frozen=True, slots=True)
class WebhookCall:
    """One HTTP request to `/webhooks/{instance}/{subpath}`, as a fake sent it."""

    method: str
    subpath: str
    headers: Mapping[str, str]
    body: bytes
    query: str = ""


class ProviderSubject:
    """What the kit needs to know about a provider and its fake. Override the methods
    marked "required"; the defaults suit most providers. Subclass `ChannelSubject` or
    `CRMSubject`."""

    kind: ClassVar[str]
    #: The provider's `name` (the value of `provider = "..."`).
    provider: ClassVar[str]
    #: The gateway's public URL (what the provider registers as its webhook address).
    public_url: ClassVar[str] = "http://gateway.test"
    #: For a CRM: the route target the test channel's messages go to.
    target: ClassVar[str | None] = None
    #: A regular expression matched against the path of the API call that sends a message.
    send_path: ClassVar[str]
    #: Path prefixes of the fake's file downloads (only the guarded fetcher may GET them).
    media_paths: ClassVar[tuple[str, ...]] = ()
    #: The conversation id messages are sent to (a customer's chat).
    conversation: ClassVar[str]

    def settings(self) -> dict[str, Any]:
        """Required: the instance's settings table (`[channels.subject]` or
        `[crms.subject]`, without `provider`)."""
        raise NotImplementedError

    def apps(self) -> dict[str, ASGIApp]:
        """Required: host name -> the fake's ASGI app (API and media hosts)."""
        raise NotImplementedError

    async def started(self, harness: GatewayHarness, webhooks: httpx.AsyncClient) -> None:
        """Called once the gateway runs: point the fake's webhooks at `webhooks` (a client of
        the gateway that records each request), install, link, open windows, and the like."""

    async def writes(self, text: str) -> None:
        """Required: someone on the provider's side (a customer of a channel, an operator of
        a CRM) writes `text` in `conversation`, and the fake POSTs its webhook(s)."""
        raise NotImplementedError

    async def sends_file(self) -> bool:
        """Someone sends a file (an image) and the fake POSTs its webhook; False if the
        provider cannot receive files."""
        return False

    async def deliver_webhooks(self) -> None:
        """The fake POSTs every webhook it has pending (echoes of sends, statuses)."""

    def error_answer(self, status: int, text: str) -> tuple[bytes, dict[str, str]]:
        """Your API's error response with HTTP `status` saying `text`: body and headers."""
        return httpx.Response(status, json={"error": {"message": text}}).content, {
            "content-type": "application/json"
        }

    def sign(self, call: WebhookCall) -> WebhookCall:
        """`call` with its credential recomputed after the kit changed the body (for
        providers that sign bodies); the default changes nothing."""
        return call

    def forgeries(self, call: WebhookCall) -> list[WebhookCall]:
        """Requests that must be refused, made from a genuine `call`: by default the same
        body without any credential-looking header, subpath or query, and with each
        credential changed. Add your own (a wrong token inside the body, say)."""
        stripped = {k: v for k, v in call.headers.items() if not _AUTH_HEADERS.fullmatch(k)}
        return [
            replace(call, headers=stripped, subpath="", query=""),
            replace(call, headers=_wrong(call.headers), subpath=_garble(call.subpath)),
        ]

    def half_broken(self, call: WebhookCall) -> WebhookCall | None:
        """`call` with one item broken and the rest valid, or None to let the kit try:
        it appends to the first list of objects in a JSON body a copy of its first element
        with every string replaced by a number."""
        return None

    def plugins(self) -> list[object]:
        """Plugins to register besides the installed ones (your plugin module, when the
        tests run before it is installed)."""
        return []

    def secrets(self) -> set[str]:
        """Values that must never appear in logs or error texts (default: the settings'
        secrets as `gateway check` finds them)."""
        return set()


class ChannelSubject(ProviderSubject):
    """A channel provider (a messenger account customers write to)."""

    kind: ClassVar[str] = "channel"


class CRMSubject(ProviderSubject):
    """A CRM provider (where operators answer); set `target` to the route target."""

    kind: ClassVar[str] = "crm"


class _Faults:
    """ASGI middleware in front of a fake: answers or times out the next matching call,
    and records every request with whether the guarded fetcher made it."""

    def __init__(self, app: ASGIApp, host: str) -> None:
        self.app = app
        self.host = host
        self.plan: list[tuple[str, int, bytes, dict[str, str]]] = []
        self.requests: list[tuple[str, str, bool]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        self.requests.append((scope["method"], path, _via_fetcher.get()))
        for index, (pattern, status, body, headers) in enumerate(self.plan):
            if re.search(pattern, path):
                del self.plan[index]
                if status == 0:  # the request reaches the fake, the answer never comes back
                    await self.app(scope, receive, _discard)
                    raise httpx.ReadTimeout("timed out waiting for the answer (injected)")
                await _answer(send, status, body, headers)
                return
        await self.app(scope, receive, send)


async def _discard(message: Message) -> None:
    return None


async def _answer(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _Capture(httpx.AsyncBaseTransport):
    """Forwards the fake's webhook calls to the gateway, keeping a copy of each."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.calls: list[WebhookCall] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        path = request.url.path
        prefix = f"/webhooks/{INSTANCE}"
        if path.startswith(prefix):
            headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != "host"}
            subpath = path[len(prefix) :].lstrip("/")
            query = request.url.query.decode()
            self.calls.append(WebhookCall(request.method, subpath, headers, body, query))
        response = await self.client.send(
            self.client.build_request(
                request.method, request.url, headers=request.headers, content=body
            )
        )
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.content
        )


@dataclass(slots=True)
class Run:
    """A started gateway with the subject's provider, as each check sees it."""

    harness: GatewayHarness
    subject: ProviderSubject
    #: The test provider on the other side of the route (`test-crm` or `test-channel`).
    peer: Recorder
    capture: _Capture
    faults: dict[str, _Faults]
    secrets: set[str]
    errors: list[str] = field(default_factory=list)

    @property
    def provider(self) -> Provider:
        return self.harness.gateway.instances[INSTANCE]

    @property
    def route(self) -> Route:
        if self.subject.kind == "channel":
            return Route("main", INSTANCE, PEER)
        return Route("main", PEER, INSTANCE, target=self.subject.target)

    def leaks(self, logs: str) -> list[str]:
        """The secrets found in `logs` or in an error text the checks saw (none, please)."""
        return sorted(s for s in self.secrets if s in logs or any(s in e for e in self.errors))

    def accepted(self) -> int:
        return len(self.harness.observer.of_type("accepted"))

    async def post(self, call: WebhookCall) -> httpx.Response:
        url = f"/webhooks/{INSTANCE}" + (f"/{call.subpath}" if call.subpath else "")
        if call.query:
            url += "?" + call.query
        response = await self.harness.client.request(
            call.method, url, headers=dict(call.headers), content=call.body
        )
        self.errors.append(response.text)
        return response

    async def peer_writes(self, native_id: str, text: str) -> None:
        """The peer's side writes `text` in the subject's conversation (via the pipeline)."""
        message = {"id": native_id, "chat": self.subject.conversation, "text": text}
        response = await self.harness.client.post(
            f"/webhooks/{PEER}",
            json={"messages": [message]},
            headers={"authorization": f"Bearer {PEER_TOKEN}"},
        )
        assert response.status_code == 200, response.text

    def fail_next_send(self, status: int, text: str = "", times: int = 1) -> None:
        """Answer the next `times` sends with `status` (0: time out after the fake got it)."""
        body, headers = self.subject.error_answer(status, text) if status else (b"", {})
        for fault in self.faults.values():
            fault.plan.extend([(self.subject.send_path, status, body, headers)] * times)

    def clear_faults(self) -> None:
        for fault in self.faults.values():
            fault.plan.clear()

    async def send(self, text: str, job_id: int = 1) -> Outcome:
        message = ChatMessage(
            conversation_id=self.subject.conversation,
            native_id=f"conformance-{job_id}",
            sender=Sender("someone", name="Someone"),
            text=text,
        )
        item = Outgoing(job_id=job_id, route=self.route, source=PEER, event=message)
        [outcome] = await send_shaped(self.provider, [item])
        if outcome is not None and not isinstance(outcome, Sent):
            self.errors.append(str(outcome))
        return outcome

    async def last_webhook(self, text: str) -> WebhookCall:
        before = len(self.capture.calls)
        await self.subject.writes(text)
        assert len(self.capture.calls) > before, "the fake sent no webhook to the gateway"
        return self.capture.calls[-1]


class _Conformance:
    """The checks every provider passes."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def run(
        self, subject: ProviderSubject, tmp_path: Any, caplog: pytest.LogCaptureFixture
    ) -> AsyncIterator[Run]:
        caplog.set_level(logging.DEBUG)
        async with _started(subject, str(tmp_path)) as run:
            yield run
        leaks = run.leaks(caplog.text)
        assert not leaks, f"secrets in the logs or error texts: {leaks}"

    async def test_redelivery_is_deduplicated(self, run: Run) -> None:
        call = await run.last_webhook("dedupe me")
        accepted = run.accepted()
        assert accepted >= 1, "the webhook carried nothing the gateway kept"
        response = await run.post(call)
        assert response.status_code < 300, response.text
        assert run.accepted() == accepted, "a redelivered webhook was stored again"
        await run.peer.wait_for(lambda r: _said(r, "dedupe me"))

    async def test_forged_requests_are_refused_and_store_nothing(self, run: Run) -> None:
        call = await run.last_webhook("genuine")
        accepted = run.accepted()
        forged_body = replace(call, body=call.body.replace(b"genuine", b"forged!"))
        for forged in run.subject.forgeries(forged_body):
            response = await run.post(forged)
            assert 400 <= response.status_code < 500, (forged, response.status_code)
        assert run.accepted() == accepted, "a forged request was stored"
        assert not _said(run.peer, "forged!")

    async def test_bodies_are_taken_whole_or_refused_whole(self, run: Run) -> None:
        call = await run.last_webhook("whole")
        broken = run.subject.half_broken(call) or _break_json(call)
        if broken is None:
            pytest.skip("no list of items in the body to break")
        accepted = run.accepted()
        response = await run.post(run.subject.sign(broken))
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert run.accepted() == accepted, "a refused body left events behind"
            assert response.json()["error"]["message"], "a refusal must say what is wrong"

    async def test_send_errors_map_to_retry_or_permanent(self, run: Run) -> None:
        assert isinstance(await run.send("fine", 1), Sent)
        # Every answer fails for a while: a provider may retry within the call first.
        for status in (429, 500, 503):
            run.fail_next_send(status, "slow down please", times=FAULT_REPEATS)
            outcome = await run.send(f"after {status}", status)
            run.clear_faults()
            assert isinstance(outcome, TemporaryError), (status, outcome)
        run.fail_next_send(400, "the recipient cannot be reached", times=FAULT_REPEATS)
        outcome = await run.send("refused", 400)
        run.clear_faults()
        assert isinstance(outcome, PermanentError), outcome
        assert "the recipient cannot be reached" in outcome.text, outcome.text

    async def test_a_timeout_after_sending_is_ambiguous(self, run: Run) -> None:
        assert isinstance(await run.send("warm up", 6), Sent)
        run.fail_next_send(0)
        outcome = await run.send("did it arrive?", 7)
        if run.provider.capabilities.idempotent_sends:
            assert isinstance(outcome, TemporaryError), outcome
        else:
            assert isinstance(outcome, AmbiguousError), outcome

    async def test_echoes_of_our_own_sends_are_dropped(self, run: Run) -> None:
        await run.last_webhook("first contact")  # opens the conversation where that matters
        await run.peer.wait_for(lambda r: _said(r, "first contact"))
        await run.peer_writes("peer-echo", "echo test")
        await _delivered(run, "peer-echo")
        await run.subject.deliver_webhooks()
        await run.subject.writes("sentinel")
        await run.peer.wait_for(lambda r: _said(r, "sentinel"))
        assert not _said(run.peer, "echo test"), "the echo of our own send came back"

    async def test_media_goes_through_the_guarded_fetcher(self, run: Run) -> None:
        fetch = run.harness.gateway.fetcher.fetch

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            token = _via_fetcher.set(True)
            try:
                return await fetch(*args, **kwargs)
            finally:
                _via_fetcher.reset(token)

        run.harness.gateway.fetcher.fetch = guarded  # type: ignore[method-assign]
        if not await run.subject.sends_file():
            pytest.skip("the subject cannot send a file")
        await run.peer.wait_for(lambda r: any(x.item.get("attachments") for x in r.received))
        [received] = [x for x in run.peer.received if x.item.get("attachments")]
        for attachment in received.item["attachments"]:
            url = str(attachment["url"])
            assert not any(s in url for s in run.secrets), "a credential in a file URL"
            if url.startswith(run.harness.gateway.settings.public_url):
                served = await run.harness.client.get(url, follow_redirects=True)  # as a peer
                assert served.status_code == 200 and served.content, served.text
        for fault in run.faults.values():
            for method, path, via in fault.requests:
                if method == "GET" and path.startswith(run.subject.media_paths):
                    assert via, f"{fault.host}{path} was downloaded around the guarded fetcher"


class ChannelConformance(_Conformance):
    """The checks for a channel; subclass it as `TestSomething` with a `subject` fixture
    returning your `ChannelSubject`."""


class CRMConformance(_Conformance):
    """The checks for a CRM; subclass it as `TestSomething` with a `subject` fixture
    returning your `CRMSubject`."""


@asynccontextmanager
async def _started(subject: ProviderSubject, directory: str) -> AsyncIterator[Run]:
    channel = subject.kind == "channel"
    peer = Recorder(name=PEER)
    faults = {host: _Faults(app, host) for host, app in subject.apps().items()}
    own = {"provider": subject.provider, **subject.settings()}
    other = {"provider": "test-crm" if channel else "test-channel", "token": PEER_TOKEN}
    other["base_url"] = "http://peer.test"
    settings: dict[str, Any] = {
        "public_url": subject.public_url,
        "store": {"url": f"sqlite:///{directory}/conformance.db"},
        "media": {"directory": f"{directory}/media"},
        "channels": {INSTANCE if channel else PEER: own if channel else other},
        "crms": {PEER if channel else INSTANCE: other if channel else own},
        "retry": {"base_delay": 0.01, "max_delay": 0.05, "jitter": 0.0},
    }
    if channel:
        settings["routes"] = {"main": {"channel": INSTANCE, "crm": PEER}}
    elif subject.target is not None:
        settings["routes"] = {"main": {"channel": PEER, "crm": INSTANCE, "target": subject.target}}
    apps: dict[str, ASGIApp] = {**faults, "peer.test": peer.app}
    async with running_gateway(settings, apps=apps, plugins=subject.plugins()) as harness:
        capture = _Capture(harness.client)
        async with httpx.AsyncClient(transport=capture, base_url=subject.public_url) as webhooks:
            await subject.started(harness, webhooks)
            provider = harness.gateway.instances[INSTANCE]
            parsed = settings_from_mapping(settings)
            found = secret_values(parsed, {subject.provider: type(provider)})
            secrets = (found | subject.secrets()) - {PEER_TOKEN}
            yield Run(harness, subject, peer, capture, faults, secrets)


def _said(peer: Recorder, text: str) -> bool:
    """Whether a message containing `text` reached the peer (a CRM may add a signature)."""
    return any(text in said for said in peer.texts())


async def _delivered(run: Run, message_id: str) -> None:
    """Wait until the message `message_id` was delivered to the subject."""
    observer = run.harness.observer
    while not any(
        o.instance == INSTANCE and o.message_id == message_id for o in observer.of_type("delivered")
    ):
        await observer.wait_for("delivered", count=len(observer.of_type("delivered")) + 1)


def _wrong(headers: Mapping[str, str]) -> dict[str, str]:
    changed = dict(headers)
    for key, value in headers.items():
        if _AUTH_HEADERS.fullmatch(key):
            changed[key] = re.sub(r"[0-9a-f]", "0", value[:-8]) + "00000000" if value else "x"
    return changed


def _garble(subpath: str) -> str:
    return re.sub(r"[A-Za-z0-9]", "x", subpath)


def _break_json(call: WebhookCall) -> WebhookCall | None:
    try:
        import orjson

        body = orjson.loads(call.body)
    except ValueError:
        return None
    if not _append_broken(body):
        return None
    return replace(call, body=orjson.dumps(body))


def _append_broken(value: Any) -> bool:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        value.append(_numbers(value[0]))
        return True
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    )
    return any(_append_broken(child) for child in children)


def _numbers(value: Any) -> Any:
    if isinstance(value, str):
        return 12345
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value
