from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    # The stores are built on asyncio (wrap_future, asyncio.Lock), as is the gateway.
    return "asyncio"
