"""When an HTTP call is retried and how long to wait: the one rule both HTTP clients follow.

Retried: timeouts, lost connections and the statuses whose outcome is "try again later" (408,
409 (another request was in flight), 425, 429, 5xx). Waits grow exponentially with full jitter
and are at least what a ``Retry-After`` header asks; a ``Retry-After`` beyond
``max_retry_after`` gives up at once rather than hold a run for longer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})
TRANSIENT_ERRORS: tuple[type[httpx.HTTPError], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)
"""httpx failures whose outcome is unknown; anything else from httpx is a local fault."""


def is_transient_status(status: int) -> bool:
    return status in TRANSIENT_STATUSES or status >= 500


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a call gets and how long to wait between them."""

    max_attempts: int = 6
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    max_retry_after: float = 300.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")

    def why_give_up(self, failures: int, retry_after: float | None) -> str | None:
        """None while another attempt is allowed after ``failures`` failures, else why not."""
        if failures >= self.max_attempts:
            return f"gave up after {failures} attempts"
        if retry_after is not None and retry_after > self.max_retry_after:
            return (
                f"asked to retry after {retry_after:.0f} s, more than "
                f"max_retry_after={self.max_retry_after:.0f} s"
            )
        return None

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Exponential backoff with full jitter; at least what ``Retry-After`` asks."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** (failures - 1))
        wait = self.rng.uniform(0.0, ceiling)
        return wait if retry_after is None else max(wait, retry_after)
