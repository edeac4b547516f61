"""Versioned schema migrations, one SQL file per version and backend.

Files are named `NNNN_description.sql` inside the package of their backend (`sqlite/`,
later `postgresql/`). Versions are contiguous from 1: a gap means a file went missing, and
a store migrated past it could not be rebuilt the same way, so loading refuses it. Each
backend records applied versions in its `schema_migrations` table.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

from gateway.errors import MigrationError

_FILE_NAME = re.compile(r"(\d{4})_(\w+)\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


@functools.cache
def load_migrations(backend: str) -> tuple[Migration, ...]:
    """The migrations of `backend` (a subpackage name such as "sqlite"), in version order."""
    found: list[Migration] = []
    for entry in resources.files(f"{__name__}.{backend}").iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"{backend} migrations must be numbered 1..n, found {versions}")
    return tuple(found)


def latest_version(backend: str) -> int:
    """The version a store of `backend` reaches once every migration is applied."""
    migrations = load_migrations(backend)
    return migrations[-1].version if migrations else 0
