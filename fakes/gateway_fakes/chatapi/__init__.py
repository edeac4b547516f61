"""A faithful fake Chat API server for tests, the demo and plugin authors.

```python
fake = FakeChatApi(instance_id="1101", token="tok", http=client_to_gateway)
gateway_http = httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app),
                                 base_url=fake.host)
msg_id = fake.customer_writes("79001234567", "Hello")
report = await fake.deliver_webhooks()
```

Run standalone: `python -m gateway_fakes.chatapi --port 8020`.
"""

from __future__ import annotations

from gateway.testing.fake_common import (
    CallRecord,
    Faults,
    Magic,
    ManualClock,
    magic_phone,
)
from gateway.testing.fake_delivery import (
    DeliveryReport,
    WebhookAttempt,
)

from .core import FakeChatApi
from .model import (
    ACCOUNT_STATUSES,
    ACK_STATUSES,
    ChatApiSent,
    ChatApiSettings,
    HookBatch,
    StoredMessage,
)

__all__ = [
    "ACCOUNT_STATUSES",
    "ACK_STATUSES",
    "CallRecord",
    "ChatApiSent",
    "ChatApiSettings",
    "DeliveryReport",
    "FakeChatApi",
    "Faults",
    "HookBatch",
    "Magic",
    "ManualClock",
    "StoredMessage",
    "WebhookAttempt",
    "magic_phone",
]
