"""A faithful fake GREEN-API server for tests, the demo and plugin authors.

```python
fake = FakeGreenApi(settings=ALL_NOTIFICATIONS_ON, http=client_to_gateway)
api = httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app), base_url=fake.api_url)
id_message = fake.customer_writes("79001234567", "Hello")
report = await fake.deliver_webhooks()
```

Run standalone: `python -m gateway_fakes.greenapi --port 8021`.
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

from .core import FakeGreenApi
from .model import (
    ALL_NOTIFICATIONS_ON,
    STATES,
    STATUSES,
    GreenSent,
    GreenSettings,
    Notification,
)
from .queue import NotificationQueue

__all__ = [
    "ALL_NOTIFICATIONS_ON",
    "STATES",
    "STATUSES",
    "CallRecord",
    "DeliveryReport",
    "FakeGreenApi",
    "Faults",
    "GreenSent",
    "GreenSettings",
    "Magic",
    "ManualClock",
    "Notification",
    "NotificationQueue",
    "WebhookAttempt",
    "magic_phone",
]
