"""Spend logs from a LiteLLM proxy's ``GET /spend/logs/v2``.

For deployments where the pipeline may not reach LiteLLM's PostgreSQL but may call the proxy. The
endpoint pages with offsets over a live table and reports a count capped at 10,000, so this source
reads one UTC hour at a time in ascending ``startTime`` order, halves any window whose count is
capped, checks each window's row count against the server's, and retries transient failures.

Window bounds (checked against LiteLLM's ``ui_view_spend_logs``): ``start_date``/``end_date`` are
parsed with ``"%Y-%m-%d %H:%M:%S"`` and compared as ``"startTime" >= start AND "startTime" <= end``
on ``timestamp(3)`` values. An ``end_date`` of ``hh:59:59`` therefore means ``hh:59:59.000`` and
would silently lose every row in ``(hh:59:59.000, hh+1:00:00.000)``, e.g. one at ``59:59.500``.
So each window ``[start, end)`` is queried with ``end_date = end`` (inclusive, whole second) and
the only extra rows that bound admits, those at exactly ``end``, are dropped here; they belong to
the next window and are read with it. Nothing is lost and nothing foreign is kept.

The master key travels only in the ``Authorization`` header. It is never logged, never part of a
``repr`` and is scrubbed from any server message quoted in an error.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc

from cz_pipeline.lib.hours import HOUR, HourWindow, as_utc
from cz_pipeline.lib.http_retry import (
    TRANSIENT_ERRORS,
    RetryPolicy,
    is_transient_status,
    parse_retry_after,
)
from cz_pipeline.lib.redaction import Redactor
from cz_pipeline.lib.sources.base import Extraction, SourceError
from cz_pipeline.lib.sources.row_problems import (
    COST_FIELDS,
    json_type,
    metadata_number,
    row_problems,
)
from cz_pipeline.lib.spend_log_schema import EXTRACT_SCHEMA, NAIVE_MS

log = logging.getLogger(__name__)

SPEND_LOGS_PATH = "/spend/logs/v2"
MAX_PAGE_SIZE = 1000  # LiteLLM rejects larger pages with 422
COUNT_CAP = 10_000  # LiteLLM's SPEND_LOGS_PAGINATION_COUNT_CAP; only used in messages
QUERY_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_MAX_DETAIL_CHARS = 500
_API_KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9_.*\-]{2,}")


# --------------------------------------------------------------------------------------------
# JSON rows -> EXTRACT_SCHEMA
# --------------------------------------------------------------------------------------------


def rows_to_extract(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Turn ``/spend/logs/v2`` rows into an ``EXTRACT_SCHEMA`` table, column by column.

    Only named keys are touched: ``messages``, ``response``, ``proxy_server_request``,
    ``requester_ip_address`` and ``metadata.model_map_information`` are never read, so they cannot
    leak into the lake. Columns older LiteLLM versions lack come out as nulls. Raises ValueError
    naming the column when a value cannot be converted.
    """
    parsed = [_parsed(row.get("metadata")) for row in rows]
    metadata = [_as_object(value) for value in parsed]
    usage = [_as_object(meta.get("usage_object")) for meta in metadata]
    costs = [_as_object(meta.get("cost_breakdown")) for meta in metadata]

    def top(key: str) -> list[Any]:
        return [row.get(key) for row in rows]

    numbers = {
        "cache_read_input_tokens": [u.get("cache_read_input_tokens") for u in usage],
        "cached_tokens": [
            _as_object(u.get("prompt_tokens_details")).get("cached_tokens") for u in usage
        ],
        "cache_creation_input_tokens": [u.get("cache_creation_input_tokens") for u in usage],
        **{name: [breakdown.get(name) for breakdown in costs] for name in COST_FIELDS},
    }
    guarded = {name: metadata_number(name, values) for name, values in numbers.items()}
    not_objects = pa.array(
        [None if isinstance(value, Mapping) else json_type(value) for value in parsed],
        pa.string(),
    )

    values: dict[str, list[Any]] = {
        "request_id": top("request_id"),
        "litellm_call_id": top("litellm_call_id"),
        "call_type": top("call_type"),
        "status": top("status"),
        "start_time": top("startTime"),
        "end_time": top("endTime"),
        "created_at": top("created_at"),
        "request_duration_ms": top("request_duration_ms"),
        "model": top("model"),
        "model_id": top("model_id"),
        "model_group": top("model_group"),
        "custom_llm_provider": top("custom_llm_provider"),
        "api_key": top("api_key"),
        "key_alias": [meta.get("user_api_key_alias") for meta in metadata],
        "team_id": top("team_id"),
        "team_alias": [meta.get("user_api_key_team_alias") for meta in metadata],
        "organization_id": top("organization_id"),
        "user": top("user"),
        "end_user": top("end_user"),
        "session_id": top("session_id"),
        "spend": top("spend"),
        "prompt_tokens": top("prompt_tokens"),
        "completion_tokens": top("completion_tokens"),
        "total_tokens": top("total_tokens"),
        "cache_hit": top("cache_hit"),
        "request_tags": [
            None if tags is None else json.dumps(tags) for tags in top("request_tags")
        ],
        "spend_logs_metadata": [  # any JSON text: normalize gives it the lake's one spelling
            None if value is None else json.dumps(value)
            for value in (meta.get("spend_logs_metadata") for meta in metadata)
        ],
    }
    arrays: dict[str, pa.Array] = {
        name: _to_array(name, column, EXTRACT_SCHEMA.field(name).type)
        for name, column in values.items()
    }
    arrays["cache_read_tokens"] = pc.coalesce(
        guarded["cache_read_input_tokens"].values, guarded["cached_tokens"].values, 0
    )
    arrays["cache_creation_tokens"] = pc.coalesce(guarded["cache_creation_input_tokens"].values, 0)
    for name in COST_FIELDS:
        arrays[name] = guarded[name].values
    arrays["row_problems"] = row_problems(
        not_objects, [number.problems for number in guarded.values()]
    )
    return pa.Table.from_arrays(
        [arrays[field.name] for field in EXTRACT_SCHEMA], schema=EXTRACT_SCHEMA
    )


def _parsed(value: Any) -> Any:
    """``metadata`` as JSON; some LiteLLM versions send it as JSON text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _as_object(value: Any) -> Mapping[str, Any]:
    """A JSON object as a mapping; some LiteLLM versions send ``metadata`` as JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, Mapping) else {}


def _to_array(name: str, values: list[Any], type_: pa.DataType) -> pa.Array:
    try:
        if pa.types.is_timestamp(type_):
            return _timestamps(values)
        if pa.types.is_string(type_):
            values = [v if v is None or isinstance(v, str) else str(v) for v in values]
        return pa.array(values, type=type_)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"cannot convert column {name!r} from LiteLLM's rows: {exc}") from exc


def _timestamps(values: list[Any]) -> pa.Array:
    """ISO 8601 strings (``...147+00:00``, ``...147Z``, offsets) to naive UTC milliseconds.

    Arrow parses the usual zoned form in one vectorized cast; naive strings (LiteLLM stores naive
    UTC) or odd spellings fall back to ``datetime.fromisoformat`` per value.
    """
    strings = pa.array(values, type=pa.string())
    try:
        zoned = strings.cast(pa.timestamp("ns", tz="UTC"))
    except pa.ArrowInvalid:
        parsed = [None if v is None else _parse_timestamp(v) for v in strings.to_pylist()]
        return pa.array(parsed, type=NAIVE_MS)
    return zoned.cast(pa.timestamp("ms", tz="UTC"), safe=False).cast(NAIVE_MS)


def _parse_timestamp(text: str) -> datetime:
    moment = as_utc(datetime.fromisoformat(text)).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


# --------------------------------------------------------------------------------------------
# The source
# --------------------------------------------------------------------------------------------


@dataclass
class _Stats:
    """What the extraction did, for the note the run shows."""

    rows: int = 0
    pages: int = 0
    splits: int = 0
    rereads: int = 0
    retries: int = 0
    duplicates: int = 0


@dataclass
class _Pass:
    """One walk through the pages of a window."""

    total: int | None = None
    capped: bool = False
    stopped_for_cap: bool = False


class LiteLLMApiSource:
    """Reads spend logs hour by hour from ``GET {base_url}/spend/logs/v2`` with the master key.

    ``transport`` lets tests or callers plug in an ``httpx`` transport; ``backoff_base`` and
    ``backoff_max`` (seconds) shape the full-jitter exponential backoff between attempts;
    ``min_split`` is the narrowest window a capped count is split into (such a window is still
    paged to its end, which returns every row; only LiteLLM's count stops at the cap); ``sleep``
    is how backoff waits.
    """

    name = "api"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        page_size: int = MAX_PAGE_SIZE,
        timeout: float = 30.0,
        max_attempts: int = 5,
        transport: httpx.BaseTransport | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        min_split: timedelta = timedelta(minutes=1),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
        if not api_key:
            raise ValueError("api_key (the LiteLLM master key) is empty")
        if min_split < timedelta(seconds=1):
            raise ValueError("min_split must be at least one second (the API's resolution)")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._page_size = page_size
        self._timeout = timeout
        self._retry = RetryPolicy(max_attempts, backoff_base, backoff_max)
        self._redactor = Redactor.of([api_key], patterns=[_API_KEY_PATTERN])
        self._transport = transport
        self._min_split = min_split
        self._sleep = sleep
        self._where = f"LiteLLM API at {_without_credentials(self.base_url)}"

    def __repr__(self) -> str:
        return f"LiteLLMApiSource(base_url={_without_credentials(self.base_url)!r})"

    def extract(self, window: HourWindow) -> Extraction:
        """Lazily read ``window``; batches come hour by hour, ascending by ``start_time``."""
        notes: list[str] = []
        # Pages are read lazily: the first request follows at once, so its time is now.
        return Extraction(
            batches=self._batches(window, notes), notes=notes, snapshot=datetime.now(UTC)
        )

    # -- reading --------------------------------------------------------------------------

    def _batches(self, window: HourWindow, notes: list[str]) -> Iterator[pa.RecordBatch]:
        stats = _Stats()
        with httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"},
            timeout=self._timeout,
            transport=self._transport,
        ) as client:
            for hour in window.hours():
                yield from self._read_window(client, hour, hour + HOUR, stats)
        where = _without_credentials(self.base_url)
        notes.append(
            f"read {stats.rows} rows in {stats.pages} pages from {where}, "
            f"windows split for the {COUNT_CAP:,} cap: {stats.splits}"
        )
        if stats.retries:
            notes.append(f"retried {stats.retries} requests after timeouts or server errors")
        if stats.rereads or stats.duplicates:
            notes.append(
                f"re-read {stats.rereads} windows whose row count changed while paging; "
                f"{stats.duplicates} rows served twice were kept once"
            )

    def _read_window(
        self, client: httpx.Client, start: datetime, end: datetime, stats: _Stats
    ) -> Iterator[pa.RecordBatch]:
        """Read ``[start, end)``, halving it while LiteLLM says its count is capped."""
        pending = [(start, end)]
        while pending:
            lo, hi = pending.pop()
            may_split = hi - lo >= 2 * self._min_split
            table = self._read_span(client, lo, hi, stats, may_split=may_split)
            if table is None:
                middle = lo + timedelta(seconds=int((hi - lo).total_seconds()) // 2)
                stats.splits += 1
                log.info("LiteLLM count capped for %s..%s; splitting at %s", lo, hi, middle)
                pending.extend([(middle, hi), (lo, middle)])  # stack: earlier half first
                continue
            stats.rows += table.num_rows
            if table.num_rows:
                yield from table.to_batches(max_chunksize=self._page_size)

    def _read_span(
        self,
        client: httpx.Client,
        start: datetime,
        end: datetime,
        stats: _Stats,
        *,
        may_split: bool,
    ) -> pa.Table | None:
        """Every row of ``[start, end)``, sorted; None when the window must be split first.

        The count LiteLLM reports (when not capped) must be matched by the distinct rows read.
        A shortfall means rows arrived or order shifted under the offset pagination, so the
        window is read once more and the union kept; a second shortfall fails the extraction
        instead of dropping rows silently.
        """
        seen: set[str] = set()
        tables: list[pa.Table] = []
        for attempt in (1, 2):
            result = self._page_through(
                client,
                start,
                end,
                seen,
                tables,
                stats,
                first_pass=attempt == 1,
                may_split=may_split,
            )
            if result.stopped_for_cap:
                return None
            if result.capped or result.total is None or len(seen) >= result.total:
                break
            if attempt == 2:
                raise SourceError(
                    f"{self._where} counts {result.total} rows from {start:%Y-%m-%d %H:%M:%S} to "
                    f"{end:%Y-%m-%d %H:%M:%S} UTC (both inclusive) but only {len(seen)} distinct "
                    "rows came back after reading it twice; rows are still arriving or paging is "
                    "unstable. Re-run the hour later."
                )
            stats.rereads += 1
            log.warning(
                "%s served %d of %d rows for %s..%s; reading the window again",
                self._where,
                len(seen),
                result.total,
                start,
                end,
            )
        if not tables:
            return EXTRACT_SCHEMA.empty_table()
        table = pa.concat_tables(tables)
        return table.sort_by([("start_time", "ascending"), ("request_id", "ascending")])

    def _page_through(
        self,
        client: httpx.Client,
        start: datetime,
        end: datetime,
        seen: set[str],
        tables: list[pa.Table],
        stats: _Stats,
        *,
        first_pass: bool,
        may_split: bool,
    ) -> _Pass:
        """Follow pages until one comes back empty (``total`` is not trusted to stop)."""
        result = _Pass()
        lower = pa.scalar(start.replace(tzinfo=None), type=NAIVE_MS)
        upper = pa.scalar(end.replace(tzinfo=None), type=NAIVE_MS)
        page = 1
        while True:
            body = self._get_page(client, start, end, page, stats)
            capped = bool(body.get("total_is_capped"))
            total = body.get("total")
            result.capped = result.capped or capped
            result.total = total if isinstance(total, int) and not isinstance(total, bool) else None
            if page == 1 and capped and may_split and first_pass:
                result.stopped_for_cap = True
                return result
            rows: list[Mapping[str, Any]] = body["data"]
            if not rows:
                return result
            fresh = _unseen(rows, seen)
            if first_pass:  # on a re-read, served-before rows are expected
                stats.duplicates += len(rows) - len(fresh)
            if first_pass and not fresh:
                raise SourceError(
                    f"{self._where} served only rows it had already served on page {page}; "
                    "it seems to ignore the `page` parameter"
                )
            if fresh:
                tables.append(self._in_window(fresh, lower, upper, start, end))
            page += 1

    def _in_window(
        self,
        rows: list[Mapping[str, Any]],
        lower: pa.Scalar,
        upper: pa.Scalar,
        start: datetime,
        end: datetime,
    ) -> pa.Table:
        """Convert a page; keep ``lower <= start_time < upper`` (the next window owns ``upper``)."""
        try:
            table = rows_to_extract(rows)
        except ValueError as exc:
            raise SourceError(f"{self._where} sent a row this pipeline cannot read: {exc}") from exc
        starts = table.column("start_time")
        if starts.null_count:
            raise SourceError(f"{self._where} sent {starts.null_count} rows without a startTime")
        inside = pc.and_(pc.greater_equal(starts, lower), pc.less(starts, upper))
        outside = table.num_rows - pc.sum(inside).as_py()
        if outside:
            beyond = pc.sum(pc.or_(pc.less(starts, lower), pc.greater(starts, upper))).as_py()
            if beyond:
                log.warning(
                    "%s returned %d rows outside %s..%s (inclusive); they were left out",
                    self._where,
                    beyond,
                    start,
                    end,
                )
            return table.filter(inside)
        return table

    # -- HTTP -----------------------------------------------------------------------------

    def _get_page(
        self, client: httpx.Client, start: datetime, end: datetime, page: int, stats: _Stats
    ) -> dict[str, Any]:
        """One page, retried with full-jitter backoff on timeouts, lost connections, 429 and 5xx."""
        params: dict[str, str | int] = {
            "start_date": start.strftime(QUERY_TIME_FORMAT),
            "end_date": end.strftime(QUERY_TIME_FORMAT),
            "page": page,
            "page_size": self._page_size,
            "sort_by": "startTime",
            "sort_order": "asc",
        }
        problem = ""
        failures = 0
        while True:
            retry_after = None
            try:
                response = client.get(SPEND_LOGS_PATH, params=params)
            except TRANSIENT_ERRORS as exc:
                problem = self._redactor.error(exc)
            except Exception as exc:  # a local fault (e.g. a header httpx refuses)
                reason = self._redactor.error(exc)
                raise SourceError(f"{self._where} cannot be called: {reason}") from None
            else:
                status = response.status_code
                if 200 <= status < 300:
                    stats.pages += 1
                    return self._envelope(response)
                detail = self._detail(response)
                if status in (401, 403):
                    raise SourceError(
                        f"{self._where} refused the master key (HTTP {status}): {detail}"
                    )
                if not is_transient_status(status):
                    raise SourceError(
                        f"{self._where} rejected GET {SPEND_LOGS_PATH} (HTTP {status}): {detail}"
                    )
                problem = f"HTTP {status}: {detail}"
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            failures += 1
            give_up = self._retry.why_give_up(failures, retry_after)
            if give_up is not None:
                raise SourceError(
                    f"{self._where} failed GET {SPEND_LOGS_PATH}: {give_up}; last error: {problem}"
                )
            delay = self._retry.delay(failures, retry_after)
            stats.retries += 1
            log.warning(
                "%s: GET %s page %d attempt %d/%d failed (%s); retrying in %.2fs",
                self._where,
                SPEND_LOGS_PATH,
                page,
                failures,
                self._retry.max_attempts,
                problem,
                delay,
            )
            self._sleep(delay)

    def _envelope(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as exc:
            raise SourceError(f"{self._where} answered {SPEND_LOGS_PATH} with non-JSON") from exc
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise SourceError(
                f"{self._where} answered {SPEND_LOGS_PATH} without a `data` list; is it LiteLLM "
                "1.81 or newer?"
            )
        if not all(isinstance(row, dict) for row in body["data"]):
            raise SourceError(f"{self._where} answered {SPEND_LOGS_PATH} with non-object rows")
        return body

    def _detail(self, response: httpx.Response) -> str:
        """LiteLLM's explanation: FastAPI's ``detail`` or LiteLLM's ``error.message``."""
        try:
            body = response.json()
        except ValueError:
            text = response.text.strip() or response.reason_phrase
        else:
            text = _detail_text(body)
        text = self._redact(text)
        return text if len(text) <= _MAX_DETAIL_CHARS else text[:_MAX_DETAIL_CHARS] + "..."

    def _redact(self, text: str) -> str:
        """Scrub the master key, whole or abbreviated (LiteLLM echoes ``sk-...`` in auth errors)."""
        return self._redactor.text(text)


def _unseen(rows: Iterable[Mapping[str, Any]], seen: set[str]) -> list[Mapping[str, Any]]:
    """Rows whose ``request_id`` (LiteLLM's primary key) was not served before in this window."""
    fresh = []
    for row in rows:
        request_id = row.get("request_id")
        if isinstance(request_id, str):
            if request_id in seen:
                continue
            seen.add(request_id)
        fresh.append(row)
    return fresh


def _detail_text(body: Any) -> str:
    if isinstance(body, dict):
        detail = body.get("detail")
        if detail is None and isinstance(body.get("error"), dict):
            detail = body["error"].get("message")
        if isinstance(detail, list):  # FastAPI validation errors
            return "; ".join(_validation_text(item) for item in detail)
        if detail is not None:
            return detail if isinstance(detail, str) else json.dumps(detail)
    return json.dumps(body)


def _validation_text(item: Any) -> str:
    if isinstance(item, dict):
        location = ".".join(str(part) for part in item.get("loc", []))
        return f"{location}: {item.get('msg', '')}".strip(": ")
    return str(item)


def _without_credentials(url: str) -> str:
    """A URL fit for messages: any ``user:password@`` part removed."""
    return re.sub(r"//[^/@]*@", "//", url, count=1)
