"""Issue 12, low: tokens and secrets sat in plain text in the store. With
`[store] encryption_key` every value of a plugin's state is sealed (Fernet); keys rotate."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from gateway.errors import StoreError
from gateway.instances import InstanceState
from gateway.sealing import Sealer
from gateway.store import open_store

pytestmark = pytest.mark.anyio

Runner = Any  # the `b24` fixture of conftest.py
OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def raw_values(db: Path) -> str:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT * FROM kv").fetchall()
    return repr(rows)


async def test_portal_tokens_are_sealed_in_the_store(b24: Runner, tmp_path: Path) -> None:
    store = {"url": f"sqlite:///{tmp_path / 'gw.db'}", "encryption_key": NEW}
    async with b24(extra={"store": store}) as s:
        await s.install()
        await s.link()
        token = await s.stored_token()
        assert token == s.portal.application_token  # the gateway reads it back
        page = await s.page()
        assert page.status_code == 200  # the form secret opens too
    stored = raw_values(tmp_path / "gw.db")
    assert "sealed:v1:" in stored
    for secret in (s.portal.application_token, "refresh-", "access-"):
        assert secret not in stored


async def test_keys_rotate_and_values_are_resealed_when_written(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kv.db'}")
    await store.open()
    try:
        plain = InstanceState(store, "instance:b24")
        await plain.put("portal:1", {"refresh_token": "r-1"})
        old = InstanceState(store, "instance:b24", sealer=Sealer([OLD]))
        await old.put("portal:2", {"refresh_token": "r-2"})
        rotated = InstanceState(store, "instance:b24", sealer=Sealer([NEW, OLD]))
        assert dict(await rotated.items("portal:")) == {
            "portal:1": {"refresh_token": "r-1"},
            "portal:2": {"refresh_token": "r-2"},
        }
        new_only = InstanceState(store, "instance:b24", sealer=Sealer([NEW]))
        with pytest.raises(StoreError, match="decryption_keys"):
            await new_only.get("portal:2")  # still under the old key until rewritten
        await rotated.put("portal:2", {"refresh_token": "r-3"})  # a refresh rewrites it
        assert await new_only.get("portal:2") == {"refresh_token": "r-3"}
        assert await new_only.get("portal:1") == {"refresh_token": "r-1"}  # plain is read
        with pytest.raises(StoreError, match="encryption_key"):
            await plain.get("portal:2")  # sealed values are never handed over as text
    finally:
        await store.close()
