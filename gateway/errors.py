"""Every exception the gateway raises on purpose, in one tree.

```
GatewayError
├── ConfigError                 settings that cannot run (names file, key and fix)
├── PluginError                 a plugin failed to import or registered something invalid
├── ShutdownError               a background task ignored its cancellation (named)
├── StoreError                  the store cannot do what was asked
│   └── MigrationError          the schema is newer than this code, or a migration failed
├── WebhookError                an inbound request is refused (carries an HTTP status)
│   ├── BadRequest              400/413/415/422: the body cannot be understood
│   ├── Unauthorized            401/403: the caller did not prove who it is
│   └── RetryLater              503 + Retry-After: nothing was stored, send it again later
├── FetchError                  the guarded fetcher refused or failed a download
│   ├── ForbiddenAddress        the URL points at loopback/private/link-local space
│   └── MediaTooLarge           a file is bigger than the media store (or a fetch) takes
└── DeliveryError               a provider could not deliver (raised inside providers)
    ├── TemporaryError          try again later (optionally after `retry_after` seconds)
    │   ├── AmbiguousError      the request may or may not have taken effect
    │   └── Throttled           a rate limit (ours or the provider's) said "not now"
    └── PermanentError          retrying cannot help; carries the provider's code and text
```

Providers raise `DeliveryError` subclasses from `send`, `acknowledge` and `apply_status`
(or return them per item as outcomes); the pipeline turns them into retries, dead letters
and notices to the other side.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """Settings that cannot run; `problems` lists each with its file, key and fix."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConfigProblem:
    """One thing wrong in the settings: where it is and how to fix it."""

    __slots__ = ("file", "fix", "key", "message")

    def __init__(self, key: str, message: str, fix: str, file: str = "settings") -> None:
        self.key = key
        self.message = message
        self.fix = fix
        self.file = file

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message} (fix: {self.fix})"

    def __repr__(self) -> str:
        return f"ConfigProblem({self.key!r}, {self.message!r})"


class PluginError(GatewayError):
    """A plugin failed to import or registered something invalid."""


class ShutdownError(GatewayError):
    """A background task still ran a bounded time after it was cancelled (see `gateway.aio`):
    the gateway stops anyway, and says which task ignored its cancellation."""


class StoreError(GatewayError):
    """The store cannot do what was asked."""


class MigrationError(StoreError):
    """The schema is newer than this code, or a migration failed."""


class WebhookError(GatewayError):
    """An inbound request is refused; `status` is the HTTP status to answer with."""

    status = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.message = message


class BadRequest(WebhookError):
    """The request body cannot be understood."""

    status = 400


class Unauthorized(WebhookError):
    """The caller did not prove who it is (401) or is not allowed (403)."""

    status = 401


class RetryLater(WebhookError):
    """The provider should deliver this request again later: the gateway cannot take it
    now (a dependency is down, a lock is held) and stored nothing. Answered with 503 and a
    `Retry-After` header of `retry_after` seconds when given; providers that retry on 5xx
    (most do) redeliver it, and their dedupe keys make the redelivery safe."""

    status = 503

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FetchError(GatewayError):
    """The guarded fetcher refused or failed a download; `status` is the HTTP status the
    server answered with, when it answered with an error."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def permanent(self) -> bool:
        """Whether trying again cannot help (a 4xx other than 408/429)."""
        status = self.status
        return status is not None and 400 <= status < 500 and status not in (408, 429)


class ForbiddenAddress(FetchError):
    """The URL resolves to loopback, private, link-local or otherwise forbidden space."""

    @property
    def permanent(self) -> bool:
        return True


class LocalStorageFault(FetchError):
    """The gateway could not keep a file on its own disk (folder unwritable, disk full): not
    the provider's failure, and trying again at once would not help."""

    @property
    def permanent(self) -> bool:
        return True


class MediaTooLarge(FetchError):
    """A file is bigger than the media store (or a single fetch) takes."""

    @property
    def permanent(self) -> bool:
        return True


class DeliveryError(GatewayError):
    """A provider could not deliver; `code` and `text` keep the provider's own words."""

    def __init__(self, text: str, *, code: str | None = None) -> None:
        super().__init__(f"{code}: {text}" if code else text)
        self.code = code
        self.text = text


class TemporaryError(DeliveryError):
    """Worth retrying, after `retry_after` seconds when the provider said so."""

    def __init__(
        self, text: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(text, code=code)
        self.retry_after = retry_after


class AmbiguousError(TemporaryError):
    """The request may have taken effect (a timeout after sending); see docs/architecture.md."""


class Throttled(TemporaryError):
    """A rate limit said "not now": the item was not refused, so it is retried after
    `retry_after` without counting against `max_attempts` (waiting is not failing)."""


class PermanentError(DeliveryError):
    """Retrying cannot help (window closed, no such account, bad token)."""
