"""Issue 12, low: portal tokens and form secrets sat in plain text in a store file created
0644. The store and the media folder are created owner-only."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.anyio

Runner = Any  # the `b24` fixture of conftest.py


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_store_and_media_are_created_owner_only(b24: Runner, tmp_path: Path) -> None:
    async with b24() as s:
        await s.install()
        assert mode(tmp_path / "gw.db") == 0o600
        assert mode(tmp_path / "media") == 0o700
        for sidecar in ("gw.db-wal", "gw.db-shm"):
            if (tmp_path / sidecar).exists():
                assert mode(tmp_path / sidecar) & 0o077 == 0, sidecar


def test_a_store_file_left_readable_by_an_older_release_is_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.store.sqlite_schema import connect

    path = tmp_path / "old.db"
    connect(str(path)).close()
    path.chmod(0o644)
    connect(str(path)).close()
    assert mode(path) == 0o600
    assert "readable by others (644); now 0600" in caplog.text
