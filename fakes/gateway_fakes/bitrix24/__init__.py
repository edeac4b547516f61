"""A faithful fake Bitrix24 portal (REST + OAuth + events) for tests, demos and plugin authors.

It follows the Bitrix24 connector spec (`bitrix24.md`): the REST envelopes of
`imconnector.*`, `event.*`, `batch`, `app.info`, `imopenlines.config.*`; single-use
refresh tokens; form-encoded events that are never retried; the leaky bucket and the
failures real portals produce.

```python
portal = FakePortal(http=httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway_app)))
rest = httpx.AsyncClient(transport=httpx.ASGITransport(app=portal.app),
                         base_url="https://acme.bitrix24.com")
oauth = httpx.AsyncClient(transport=httpx.ASGITransport(app=portal.oauth_app),
                          base_url="https://oauth.bitrix.info")

await portal.install("https://gw.example.com/b24/install")    # UI app: install page POST
portal.finish_install()                                        # BX24.installFinish()
await portal.open_connector_settings(line=1)                   # SETTING_CONNECTOR iframe
emission = await portal.operator_writes(1, "79991234567", "Hi", files=["price.pdf"])
portal.calls_to("imconnector.send.messages")                   # what the gateway called
portal.messages(line=1, chat_id="79991234567")                 # what operators see
portal.faults.fail_next("imconnector.send.messages", kind="503")
```

The one `portal.app` serves `/rest/...`, `/oauth/token/` (for a single-host setup) and
the file links it hands out (`/~CODE`, `/rest/download.json?token=CODE`).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette

from .envelope import RestError
from .faults import FaultKind, Faults
from .formdata import php_form_decode, php_form_encode
from .oauth import TokenPair, oauth_app
from .portal import FakePortal, FileStyle
from .state import (
    AppRecord,
    Chat,
    ChatMessage,
    Connector,
    Emission,
    EventBinding,
    EventDelivery,
    LineStatus,
    OpenLine,
    RestCall,
    Session,
)


def oauth_server(*portals: FakePortal) -> Starlette:
    """One `oauth.bitrix.info` for several portals (give them distinct `token_prefix`)."""
    chosen: Sequence[FakePortal] = portals
    return oauth_app(lambda: chosen)


__all__ = [
    "AppRecord",
    "Chat",
    "ChatMessage",
    "Connector",
    "Emission",
    "EventBinding",
    "EventDelivery",
    "FakePortal",
    "FaultKind",
    "Faults",
    "FileStyle",
    "LineStatus",
    "OpenLine",
    "RestCall",
    "RestError",
    "Session",
    "TokenPair",
    "oauth_server",
    "php_form_decode",
    "php_form_encode",
]
