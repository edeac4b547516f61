"""The media store: files the gateway re-hosts so the other side can fetch them by URL.

A file is served at `{public_url}/media/{token}/{name}` until it expires. The token is the
only credential, so it is never written to disk: files are stored under an HMAC of the token,
and someone who can list the directory still cannot build a working URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import mimetypes
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from gateway.errors import LocalStorageFault, MediaTooLarge
from gateway.fetch import clean_filename
from gateway.http_errors import error_response
from gateway.models import Attachment
from gateway.ports import Fetcher

log = logging.getLogger("gateway.media")

_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,128}\Z")
_KEY = re.compile(r"[0-9a-f]{64}\Z")
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*(;[ -~]*)?\Z")
_TEMP_PREFIX = ".tmp-"
# A data file without its meta is either mid-`put` or left by a crash; after this long
# (by the file system's clock) it is surely the latter.
_ORPHAN_GRACE_SECONDS = 3600.0
_GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})


__all__ = ["MediaStore", "MediaTooLarge", "StoredMedia"]


@dataclass(frozen=True, slots=True)
class StoredMedia:
    """A re-hosted file; `url` works for anyone until `expires_at` (UNIX seconds)."""

    url: str
    token: str
    filename: str
    mime_type: str | None
    size: int
    expires_at: float


class MediaStore:
    """Expiring files under `directory`, served by `route()`; writes never block the loop."""

    def __init__(
        self,
        directory: Path,
        public_url: str,
        *,
        secret: bytes,
        max_total_bytes: int,
        max_file_bytes: int,
        ttl_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.public_url = public_url.rstrip("/")
        self.max_total_bytes = max_total_bytes
        self.max_file_bytes = max_file_bytes
        self.ttl_seconds = ttl_seconds
        self._secret = secret
        self._clock = clock
        # Bytes on disk as of the last sweep plus what was put since; None until counted.
        self._total_bytes: int | None = None
        #: The last local storage fault (None once a file was written again); /readyz.
        self.fault: str | None = None

    # writing ------------------------------------------------------------------------------
    async def put(
        self,
        content: bytes,
        *,
        filename: str | None,
        mime_type: str | None,
        ttl: float | None = None,
    ) -> StoredMedia:
        """Store `content` and return its public URL; raises `MediaTooLarge`."""
        size = len(content)
        if size > self.max_file_bytes:
            raise MediaTooLarge(f"file is larger than {self.max_file_bytes} bytes ({size} bytes)")
        name = clean_filename(filename)
        mime = _clean_mime(mime_type)
        if mime in _GENERIC_TYPES or mime is None:
            mime = (mimetypes.guess_type(name)[0] if name else None) or mime
        if name is None:
            name = "file" + ((mimetypes.guess_extension(mime) or "") if mime else "")
        token = secrets.token_urlsafe(32)
        now = self._clock()
        expires_at = now + (self.ttl_seconds if ttl is None else ttl)
        meta = {
            "filename": name,
            "mime_type": mime,
            "size": size,
            "created_at": now,
            "expires_at": expires_at,
        }
        try:
            await anyio.to_thread.run_sync(self._write, self._key(token), content, meta)
        except OSError as exc:
            # Unwritable folder, disk full: the gateway's own fault, reported as such
            # (/readyz, the message's note) instead of as the provider's.
            self.fault = f"cannot write to {self.directory}: {exc.strerror or exc}"
            log.error("media store: %s", self.fault)
            raise LocalStorageFault(
                f"the gateway cannot store files ({exc.strerror or type(exc).__name__})"
            ) from None
        self.fault = None
        if self._total_bytes is not None:
            self._total_bytes += size
        if self._total_bytes is None or self._total_bytes > self.max_total_bytes:
            await self.sweep()  # also counts what is on disk, the first time
        return StoredMedia(
            url=f"{self.public_url}/media/{token}/{quote(name, safe='')}",
            token=token,
            filename=name,
            mime_type=mime,
            size=size,
            expires_at=expires_at,
        )

    async def rehost(
        self,
        url: str,
        fetcher: Fetcher,
        *,
        headers: Mapping[str, str] | None = None,
        filename: str | None = None,
        mime_type: str | None = None,
    ) -> StoredMedia:
        """Download `url` through the guarded fetcher (sending `headers`, e.g. the provider's
        bearer token; they are dropped on a redirect to another host) and store it.

        Raises `FetchError`: `MediaTooLarge` over `max_file_bytes`, `ForbiddenAddress` for a
        non-public address, and `.permanent` tells whether trying again could help."""
        fetched = await fetcher.fetch(url, headers=headers, max_bytes=self.max_file_bytes)
        mime = mime_type or fetched.mime_type
        return await self.put(
            fetched.content, filename=filename or fetched.filename, mime_type=mime
        )

    async def rehost_attachment(
        self,
        attachment: Attachment,
        fetcher: Fetcher,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Attachment:
        """`attachment` moved here: downloaded from `url` (default: its own) with `headers`,
        and given the store's public link, size and type. Raises like `rehost`."""
        stored = await self.rehost(
            url or attachment.url,
            fetcher,
            headers=headers,
            filename=attachment.filename,
            mime_type=attachment.mime_type,
        )
        return replace(
            attachment,
            url=stored.url,
            filename=attachment.filename or stored.filename,
            mime_type=stored.mime_type,
            size=stored.size,
            rehost=False,
        )

    def _key(self, token: str) -> str:
        return hmac.new(self._secret, token.encode("ascii"), hashlib.sha256).hexdigest()

    def _write(self, key: str, content: bytes, meta: dict[str, Any]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Data first, meta last: a file is only served once its meta exists, so a reader never
        # sees half a file, and a crash in between leaves an orphan that `sweep` removes.
        _atomic_write(self.directory, key, content)
        _atomic_write(self.directory, key + ".json", json.dumps(meta).encode())

    # cleaning -----------------------------------------------------------------------------
    async def sweep(self) -> int:
        """Delete expired files, then the oldest ones while over `max_total_bytes`."""
        removed, total = await anyio.to_thread.run_sync(self._sweep, self._clock(), time.time())
        self._total_bytes = total
        return removed

    def _sweep(self, now: float, wall_now: float) -> tuple[int, int]:
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return 0, 0
        metas: dict[str, os.DirEntry[str]] = {}
        data: dict[str, os.DirEntry[str]] = {}
        for entry in entries:
            name = entry.name
            if name.endswith(".json") and _KEY.match(name[:-5]):
                metas[name[:-5]] = entry
            elif _KEY.match(name):
                data[name] = entry
            elif name.startswith(_TEMP_PREFIX) and _older_than_grace(entry, wall_now):
                _unlink(entry.path)
        removed = 0
        live: list[tuple[float, str, int]] = []
        for key, entry in metas.items():
            meta = _read_meta(Path(entry.path))
            data_entry = data.pop(key, None)
            if meta is None or data_entry is None or float(meta["expires_at"]) <= now:
                self._delete(key)
                removed += 1
                continue
            live.append((float(meta["created_at"]), key, _size(data_entry)))
        total = sum(size for _, _, size in live)
        for entry in data.values():
            if _older_than_grace(entry, wall_now):
                _unlink(entry.path)
                removed += 1
            else:
                total += _size(entry)
        live.sort()
        for _, key, size in live:
            if total <= self.max_total_bytes:
                break
            self._delete(key)
            total -= size
            removed += 1
        return removed, total

    def _delete(self, key: str) -> None:
        # Meta first: without it the file is already gone for readers.
        _unlink(self.directory / (key + ".json"))
        _unlink(self.directory / key)

    # serving ------------------------------------------------------------------------------
    def route(self) -> Route:
        """`GET`/`HEAD /media/{token}/{name}`; the name is only for people and tools."""
        return Route("/media/{token}/{name}", self._serve, methods=["GET", "HEAD"], name="media")

    async def _serve(self, request: Request) -> Response:
        token = request.path_params["token"]
        if not _TOKEN.match(token):
            return error_response(404, "no such media file")
        key = self._key(token)
        found = await anyio.to_thread.run_sync(self._lookup, key)
        if found is None:
            return error_response(404, "no such media file")
        meta, stat_result = found
        if float(meta["expires_at"]) <= self._clock():
            return error_response(410, "this media file has expired")
        filename = str(meta.get("filename") or "file")
        headers = {
            "Content-Disposition": _content_disposition(filename),
            "Cache-Control": "private",
            "X-Content-Type-Options": "nosniff",
            # Uploaded files are whatever a customer sent; if one is HTML or SVG opened in a
            # browser, it must not run scripts with the gateway's origin.
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Referrer-Policy": "no-referrer",
        }
        return FileResponse(
            self.directory / key,
            media_type=meta.get("mime_type") or "application/octet-stream",
            headers=headers,
            stat_result=stat_result,
        )

    def _lookup(self, key: str) -> tuple[dict[str, Any], os.stat_result] | None:
        meta = _read_meta(self.directory / (key + ".json"))
        if meta is None:
            return None
        try:
            return meta, os.stat(self.directory / key)
        except FileNotFoundError:
            return None


def _atomic_write(directory: Path, name: str, content: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=directory, prefix=_TEMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
        os.replace(temp, directory / name)
    except BaseException:
        _unlink(Path(temp))
        raise


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    times = ("created_at", "expires_at")
    valid = isinstance(meta, dict) and all(isinstance(meta.get(k), int | float) for k in times)
    return meta if valid else None


def _unlink(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _size(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat().st_size
    except FileNotFoundError:
        return 0


def _older_than_grace(entry: os.DirEntry[str], wall_now: float) -> bool:
    try:
        return wall_now - entry.stat().st_mtime > _ORPHAN_GRACE_SECONDS
    except FileNotFoundError:
        return False


def _clean_mime(mime_type: str | None) -> str | None:
    value = (mime_type or "").strip().lower()
    # It ends up in a response header; anything odd is dropped rather than echoed.
    return value if _MIME.match(value) else None


def _content_disposition(filename: str) -> str:
    fallback = filename.encode("ascii", "replace").decode().replace("?", "_")
    fallback = fallback.replace('"', "_").replace("\\", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
