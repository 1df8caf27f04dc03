"""CloudZero AnyCost Stream client: one UTC hour per ``replace_hourly`` sequence, exactly once.

Contract: ``/work/shared/reference/cloudzero_api.md``. What this module promises:

* Bodies are ``{"month","operation","data"}`` compact JSON with a fixed key order, rendered by
  :func:`render_bodies`, the one function both the real upload and a dry run use, so a dry run
  writes byte for byte what the upload sends (§0.3, §3).
* An hour that does not fit one body (``max_body_bytes``, 4.5 MB by default, §6) is chunked: the
  first chunk ``replace_hourly`` clears and fills the hour, the rest ``sum`` onto it (§5.3).
* Any failure whose outcome is unknown (timeout, dropped connection, 429, 5xx) restarts the hour
  from its first chunk; a ``sum`` chunk is never replayed on its own, so partial or committed-
  then-failed sends never double count (§5.3, §5.4). 413 halves the chunk limit and restarts.
  400/401/403/404/422 fail at once with CloudZero's message (§7).
* One request at a time per client (a lock plus a one-connection pool), as the API forbids
  concurrent requests to one stream (§5.3, §6).
* The API key is sent raw in ``Authorization`` (§1) and never appears in messages, logs,
  exceptions or receipts.
* No ``cloudzero-idempotency-key`` header: it is keyed on path and method only, so a corrected
  re-upload would be silently ignored (§2.6, §5.3); ``replace_hourly`` is the idempotency.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, localcontext
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cz_pipeline.lib.hours import as_utc, floor_hour
from cz_pipeline.lib.http_retry import (
    TRANSIENT_ERRORS,
    RetryPolicy,
    is_transient_status,
    parse_retry_after,
)
from cz_pipeline.lib.redaction import Redactor

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 4_500_000
MIN_BODY_BYTES = 2_048
"""Below this a 413 re-split gives up: one line item is far smaller, so CloudZero is not
rejecting size."""

OPERATION_REPLACE_HOURLY = "replace_hourly"
OPERATION_SUM = "sum"

TIME_COLUMN = "time/usage_start"
COST_COLUMN = "cost/cost"

EMPTY_HOUR_RESOURCE_ID = "czrn:litellm:all:cross-region:all:llm-usage:no-usage"
EMPTY_HOUR_DESCRIPTION = "No LiteLLM usage in this hour; sent so replace_hourly clears the hour"

_MONTH_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_CONTROL_CHARS = [chr(c) for c in range(0x20)]


class CloudZeroError(RuntimeError):
    """CloudZero refused or kept failing; carries its message, the hour and the HTTP status."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        hour: datetime | None = None,
        month: str | None = None,
        attempts: int = 0,
    ) -> None:
        self.message = message
        self.status = status
        self.hour = hour
        self.month = month
        self.attempts = attempts
        where = f"hour {hour:%Y-%m-%dT%H:00Z}" if hour else f"month {month}" if month else "request"
        code = f"HTTP {status}" if status is not None else "no HTTP status"
        super().__init__(f"CloudZero failed for {where} ({code}): {message}")


class CloudZeroReadScopeError(CloudZeroError):
    """403 on a read: the key lacks the read scopes (§1); callers may skip the read-back."""


class BodyTooLargeError(ValueError):
    """A single line item does not fit in the body limit; no chunking can help."""


# ---------------------------------------------------------------------------------------------
# Rendering (pure)


def _whole_utc_hour(hour: datetime) -> datetime:
    moment = as_utc(hour)
    if moment != floor_hour(moment):
        raise ValueError(f"{hour!r} is not a whole UTC hour")
    return moment


def hour_text(hour: datetime) -> str:
    """``time/usage_start`` of a whole UTC hour: ``YYYY-MM-DDTHH:00:00Z`` (§4)."""
    return _whole_utc_hour(hour).strftime("%Y-%m-%dT%H:00:00Z")


def month_of(hour: datetime) -> str:
    """``month`` of a billing drop: the UTC month of its hour (§3.1)."""
    return _whole_utc_hour(hour).strftime("%Y-%m")


def empty_hour_line_items(hour: datetime) -> pa.Table:
    """The one line item sent for an hour without usage, so ``replace_hourly`` clears it.

    §5.3: a ``replace_hourly`` body with no row for an hour has nothing overlapping, so it
    probably cannot clear that hour; a single zero-cost row with a stable resource id does.
    """
    row = {
        TIME_COLUMN: hour_text(hour),
        COST_COLUMN: "0",
        "usage/amount": "0",
        "usage/units": "tokens",
        "resource/id": EMPTY_HOUR_RESOURCE_ID,
        "resource/service": "all",
        "resource/account": "all",
        "resource/region": "cross-region",
        "resource/usage_family": "all",
        "lineitem/type": "Usage",
        "lineitem/description": EMPTY_HOUR_DESCRIPTION,
    }
    return pa.table({k: pa.array([v], pa.string()) for k, v in row.items()})


def _json_string_values(values: pa.Array) -> pa.Array:
    """Escape string values for a JSON string literal (quotes not added)."""
    out = pc.replace_substring(values, "\\", "\\\\")
    out = pc.replace_substring(out, '"', '\\"')
    if pc.any(pc.match_substring_regex(out, "[\\x00-\\x1f]")).as_py():
        for ch in _CONTROL_CHARS:  # bounded loop over 32 characters, never over rows
            out = pc.replace_substring(out, ch, f"\\u{ord(ch):04x}")
    return out


def _row_texts(items: pa.Table) -> pa.Array:
    """One compact JSON object per row, keys in column order, null values left out, each
    followed by a comma (so a chunk is a contiguous slice of the buffer minus its last byte)."""
    pieces = []
    for name in items.column_names:
        column = items[name].combine_chunks()
        prefix = json.dumps(name, ensure_ascii=False) + ':"'
        pieces.append(pc.binary_join_element_wise(prefix, _json_string_values(column), '"', ""))
    body = pc.binary_join_element_wise(*pieces, ",", null_handling="skip")
    return pc.binary_join_element_wise("{", body, "},", "")


def _check_line_items(hour_str: str, items: pa.Table) -> None:
    for required in (TIME_COLUMN, COST_COLUMN):
        if required not in items.column_names:
            raise ValueError(f"line items lack the required column {required!r}")
    not_strings = [f.name for f in items.schema if not pa.types.is_string(f.type)]
    if not_strings:
        raise ValueError(f"line-item columns must be strings as sent, not: {not_strings}")
    for required in (TIME_COLUMN, COST_COLUMN):
        if items[required].null_count:
            raise ValueError(f"line-item column {required!r} has nulls")
    if not pc.all(pc.equal(items[TIME_COLUMN], hour_str)).as_py():
        raise ValueError(f"line items hold hours other than {hour_str}; send one hour at a time")


def _header(month: str, operation: str) -> bytes:
    return f'{{"month":"{month}","operation":"{operation}","data":['.encode()


_TRAILER = b"]}"


def render_bodies(
    hour: datetime, line_items: pa.Table, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> list[bytes]:
    """The exact request bodies that upload one hour: first ``replace_hourly``, then ``sum``.

    Pure and deterministic (same table, same bytes). Every body is at most ``max_body_bytes``.
    An empty table renders the zero-cost placeholder of :func:`empty_hour_line_items`.
    Raises ``ValueError`` for a table that is not one hour of wire-ready strings, and
    :class:`BodyTooLargeError` if one line item alone exceeds the limit.
    """
    hour_str = hour_text(hour)
    month = month_of(hour)
    items = line_items if line_items.num_rows else empty_hour_line_items(hour)
    _check_line_items(hour_str, items)

    rows = _row_texts(items)
    if isinstance(rows, pa.ChunkedArray):
        rows = rows.combine_chunks()
    rows = rows.cast(pa.large_string())  # 64-bit offsets: a month-sized hour cannot overflow
    n = len(rows)
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64)[rows.offset : rows.offset + n + 1]
    data = memoryview(rows.buffers()[2])
    cumulative = offsets - offsets[0]
    first_header = _header(month, OPERATION_REPLACE_HOURLY)
    budget = max_body_bytes - len(first_header) - len(_TRAILER)

    bodies: list[bytes] = []
    start = 0
    while start < n:
        # Largest end with (rows start..end, minus the final comma) within budget.
        end = int(np.searchsorted(cumulative, cumulative[start] + budget + 1, side="right")) - 1
        if end <= start:
            size = int(cumulative[start + 1] - cumulative[start]) - 1
            raise BodyTooLargeError(
                f"one line item of {hour_str} is {size} bytes; the body limit is {max_body_bytes}"
            )
        header = first_header if not bodies else _header(month, OPERATION_SUM)
        chunk = data[int(offsets[start]) : int(offsets[end]) - 1].tobytes()
        bodies.append(header + chunk + _TRAILER)
        start = end
    return bodies


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class HourReceipt:
    """What one hour's upload did; safe to log or store as metadata (no secrets)."""

    hour: datetime
    month: str
    drop_ids: tuple[str, ...]
    rows: int
    bytes: int
    chunks: int
    attempts: int
    requests: int
    body_sha256: tuple[str, ...]
    row_counts: tuple[int | None, ...]
    placeholder: bool
    max_body_bytes: int

    def to_metadata(self) -> dict[str, Any]:
        """JSON-friendly form for Dagster metadata or a run log."""
        return {
            "hour": self.hour.isoformat(),
            "month": self.month,
            "drop_ids": list(self.drop_ids),
            "rows": self.rows,
            "bytes": self.bytes,
            "chunks": self.chunks,
            "attempts": self.attempts,
            "requests": self.requests,
            "body_sha256": list(self.body_sha256),
            "row_counts": list(self.row_counts),
            "placeholder": self.placeholder,
            "max_body_bytes": self.max_body_bytes,
        }


@dataclass(frozen=True)
class MonthContents:
    """A month read back from CloudZero (§2.3): per-hour cost totals as exact decimals."""

    month: str
    found: bool
    rows: int
    hour_costs: dict[datetime, Decimal] = field(default_factory=dict)


class _RetryableError(Exception):
    def __init__(self, reason: str, status: int | None, retry_after: float | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class _TooLargeError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Client


class CloudZeroClient:
    """Serial AnyCost Stream client for one connection (see the module docstring)."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        connection_id: str,
        *,
        timeout: float = 30.0,
        max_attempts: int = 6,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        max_retry_after: float = 300.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("CloudZero API key is empty")
        if not connection_id:
            raise ValueError("CloudZero connection id is empty")
        if max_body_bytes < MIN_BODY_BYTES:
            raise ValueError(f"max_body_bytes must be at least {MIN_BODY_BYTES}")
        self._api_key = api_key
        self._redactor = Redactor.of([api_key])
        self.connection_id = connection_id
        self.api_url = api_url.rstrip("/")
        self.retry = RetryPolicy(
            max_attempts, backoff_base, backoff_cap, max_retry_after, rng or random.Random()
        )
        self.max_body_bytes = max_body_bytes
        """Shrinks for the rest of the client's life when CloudZero answers 413."""
        self._sleep = sleep
        self._lock = threading.Lock()
        self._drops_path = (
            f"/v2/connections/billing/anycost/{quote(connection_id, safe='')}/billing_drops"
        )
        self._http = httpx.Client(
            base_url=self.api_url,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            headers={"Accept": "application/json", "User-Agent": "cz-pipeline"},
        )

    def __repr__(self) -> str:
        return f"CloudZeroClient(api_url={self.api_url!r}, connection_id={self.connection_id!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CloudZeroClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- helpers ------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return self._redactor.text(text)

    def _message(self, response: httpx.Response) -> str:
        """CloudZero's error message: ``error.message`` (400) or ``message`` (403/413)."""
        try:
            payload = response.json()
        except ValueError:
            payload = None
        message: object = None
        if isinstance(payload, dict):
            error = payload.get("error")
            if isinstance(error, dict):
                message = error.get("message")
            message = message or payload.get("message")
        if not isinstance(message, str) or not message:
            message = response.text[:500] or response.reason_phrase
        return self._redact(str(message))

    def _send(self, method: str, path: str, body: bytes | None) -> httpx.Response:
        """One HTTP request; network failures become :class:`_RetryableError` (outcome unknown)."""
        headers = {"Authorization": self._api_key}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            return self._http.request(method, path, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise _RetryableError(f"timeout ({type(exc).__name__})", None, None) from None
        except TRANSIENT_ERRORS as exc:
            reason = f"connection error ({self._redactor.error(exc)})"
            raise _RetryableError(reason, None, None) from None
        except Exception as exc:  # a local fault (e.g. a header httpx refuses): never retried
            raise CloudZeroError(
                f"the request could not be sent: {self._redactor.error(exc)}"
            ) from None

    def _classify(self, response: httpx.Response) -> None:
        """Raise :class:`_RetryableError` (429, 5xx, ...) or :class:`_TooLargeError` (413)."""
        status = response.status_code
        if status == 413:
            raise _TooLargeError(self._message(response))
        if is_transient_status(status):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise _RetryableError(f"HTTP {status}: {self._message(response)}", status, retry_after)

    def _wait_or_give_up(
        self, exc: _RetryableError, failures: int, *, hour: datetime | None, month: str
    ) -> None:
        give_up = self.retry.why_give_up(failures, exc.retry_after)
        if give_up is not None:
            raise CloudZeroError(
                f"{give_up}; last: {exc.reason}",
                status=exc.status,
                hour=hour,
                month=month,
                attempts=failures,
            )
        delay = self.retry.delay(failures, exc.retry_after)
        where = f"hour {hour:%Y-%m-%dT%H:00Z}" if hour else f"month {month}"
        log.warning(
            "CloudZero %s for %s (attempt %d of %d); retrying in %.2f s",
            exc.reason,
            where,
            failures,
            self.retry.max_attempts,
            delay,
        )
        self._sleep(delay)

    def _post_drop(self, body: bytes, hour: datetime, month: str) -> tuple[str, int | None]:
        response = self._send("POST", self._drops_path, body)
        self._classify(response)
        if not response.is_success:
            raise CloudZeroError(
                self._message(response), status=response.status_code, hour=hour, month=month
            )
        try:
            connection = response.json()["connection"]
            drop_id = connection["drop_id"]
            row_count = connection.get("row_count")
            answered_month = str(connection.get("month") or month)
        except (ValueError, KeyError, TypeError):
            raise CloudZeroError(
                f"unexpected success response: {self._redact(response.text[:300])}",
                status=response.status_code,
                hour=hour,
                month=month,
            ) from None
        if not isinstance(drop_id, str) or not answered_month.startswith(month):
            raise CloudZeroError(
                f"success response does not match the drop: {self._redact(response.text[:300])}",
                status=response.status_code,
                hour=hour,
                month=month,
            )
        return drop_id, row_count if isinstance(row_count, int) else None

    # -- public API ---------------------------------------------------------------------------

    def send_hour(self, hour: datetime, line_items: pa.Table) -> HourReceipt:
        """Replace one UTC hour in CloudZero with ``line_items`` (that hour's rows only).

        The bodies are :func:`render_bodies`: chunk 1 ``replace_hourly``, chunks 2..n ``sum``.
        A timeout, dropped connection, 429 (after ``Retry-After``) or 5xx on *any* chunk waits
        (exponential backoff, full jitter) and restarts the hour from chunk 1, so the hour is
        rebuilt from scratch whatever the failed request did. 413 halves the chunk limit and
        restarts, and every later hour this client sends starts from the halved limit.
        408/409/425 count as transient too (409: another writer's request was in flight).
        Other statuses raise :class:`CloudZeroError` at once with CloudZero's message.

        An hour with no line items is cleared by sending one zero-cost placeholder row
        (:func:`empty_hour_line_items`): §5.3 says an empty ``replace_hourly`` body probably
        cannot clear an hour, while a row for the hour replaces whatever it held.
        """
        hour = _whole_utc_hour(hour)
        month = month_of(hour)
        with self._lock:
            limit = self.max_body_bytes
            attempts = 0
            failures = 0
            requests = 0
            while True:
                attempts += 1
                try:
                    bodies = render_bodies(hour, line_items, limit)
                except BodyTooLargeError as exc:
                    raise CloudZeroError(
                        f"413 re-split cannot go further: {exc}",
                        status=413,
                        hour=hour,
                        month=month,
                        attempts=attempts,
                    ) from None
                results: list[tuple[str, int | None]] = []
                try:
                    for body in bodies:
                        requests += 1
                        results.append(self._post_drop(body, hour, month))
                except _RetryableError as exc:
                    failures += 1
                    self._wait_or_give_up(exc, failures, hour=hour, month=month)
                    continue
                except _TooLargeError as exc:
                    limit //= 2
                    if limit < MIN_BODY_BYTES:
                        raise CloudZeroError(
                            f"413 even for bodies under {MIN_BODY_BYTES * 2} bytes: {exc}",
                            status=413,
                            hour=hour,
                            month=month,
                            attempts=attempts,
                        ) from None
                    # CloudZero's limit does not change between hours: later hours start here.
                    self.max_body_bytes = limit
                    log.warning(
                        "CloudZero 413 for hour %s; re-splitting with a %d-byte limit",
                        f"{hour:%Y-%m-%dT%H:00Z}",
                        limit,
                    )
                    continue
                except CloudZeroError as exc:
                    exc.attempts = attempts
                    raise
                receipt = HourReceipt(
                    hour=hour,
                    month=month,
                    drop_ids=tuple(drop_id for drop_id, _ in results),
                    rows=line_items.num_rows or 1,
                    bytes=sum(len(b) for b in bodies),
                    chunks=len(bodies),
                    attempts=attempts,
                    requests=requests,
                    body_sha256=tuple(hashlib.sha256(b).hexdigest() for b in bodies),
                    row_counts=tuple(count for _, count in results),
                    placeholder=line_items.num_rows == 0,
                    max_body_bytes=limit,
                )
                log.info(
                    "CloudZero hour %s: %d rows in %d chunk(s), %d bytes, attempt %d",
                    f"{hour:%Y-%m-%dT%H:00Z}",
                    receipt.rows,
                    receipt.chunks,
                    receipt.bytes,
                    attempts,
                )
                return receipt

    def read_month(self, month: str) -> MonthContents:
        """Read a month back (``GET .../billing_drops/{YYYY-MM}``, §2.3) as per-hour totals.

        404 means no drop for that month (``found=False``). 403 raises
        :class:`CloudZeroReadScopeError` (the key lacks the read scopes, §1), so a caller can
        skip the comparison with that reason. Transient failures retry like uploads.
        """
        if not _MONTH_RE.match(month):
            raise ValueError(f"month must be YYYY-MM, got {month!r}")
        path = f"{self._drops_path}/{month}"
        with self._lock:
            failures = 0
            while True:
                try:
                    response = self._send("GET", path, None)
                    self._classify(response)
                except _RetryableError as exc:
                    failures += 1
                    self._wait_or_give_up(exc, failures, hour=None, month=month)
                    continue
                except _TooLargeError as exc:
                    raise CloudZeroError(str(exc), status=413, month=month) from None
                break
        if response.status_code == 404:
            return MonthContents(month=month, found=False, rows=0)
        if response.status_code == 403:
            raise CloudZeroReadScopeError(self._message(response), status=403, month=month)
        if not response.is_success:
            raise CloudZeroError(self._message(response), status=response.status_code, month=month)
        try:
            rows = response.json()["billing_drop"]
            if not isinstance(rows, list):
                raise TypeError("billing_drop is not a list")
            totals: dict[datetime, Decimal] = {}
            with localcontext() as ctx:
                ctx.prec = 200  # exact for any sum of 76-digit decimals
                for row in rows:
                    start = floor_hour(datetime.fromisoformat(str(row[TIME_COLUMN])))
                    totals[start] = totals.get(start, Decimal(0)) + Decimal(str(row[COST_COLUMN]))
        except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
            raise CloudZeroError(
                f"unexpected month contents: {self._redact(str(exc))}", status=200, month=month
            ) from None
        return MonthContents(month=month, found=True, rows=len(rows), hour_costs=totals)
