"""A local fake of CloudZero's AnyCost Stream API over real HTTP on 127.0.0.1.

It enforces ``cloudzero_api.md`` §12 as strictly as the documented contract (stricter where
the real server's leniency is unknown):

* routes of §12.1 only (404 otherwise; an unknown connection id gets ``unknown_cid_status``);
* ``Authorization`` equal to a configured key, no ``Bearer`` (403 ``{"message":"Forbidden"}``,
  or ``missing_auth_status`` without the header); per-key scopes, so a key without the read
  scopes gets 403 on reads;
* JSON object bodies with ``Content-Type: application/json``; over ``max_body_bytes``
  (5,000,000) -> 413 and nothing stored; ``data`` a list; ``operation`` one of the three
  (omitting it is recorded and, by default, rejected); ``month`` present, normalised to YYYY-MM;
* every row: ``time/usage_start`` and ``cost/cost``; string values only; documented columns or
  ``resource/tag:<key>`` with allowed key characters; tags need a non-empty ``resource/id``;
  ``cost/*`` and ``usage/amount`` plain decimals; ``lineitem/type`` in the enum; UTC ISO times
  aligned to the hour; every hour inside ``month``;
* ``replace_drop`` / ``replace_hourly`` / ``sum`` with real semantics, per-month row and byte
  limits, ``drop_id`` / ``row_count`` answers, the GET read-back, the validate route;
* overlapping requests -> ``concurrent_status`` and a recorded violation (§12.17);
* the ``cloudzero-idempotency-key`` replay of §2.6;
* scripted faults (:class:`Fault`): a status (429 with ``Retry-After``, 5xx), a stall past the
  client timeout, a dropped connection, and "commit then fail".

Tests read exact per-hour cost totals (``Decimal``), stored rows, drop ids and a request log
(the Authorization value is never kept).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from cz_pipeline_tests.fakes.loopback import LoopbackServer

SCOPE_CREATE = "connections:create_billing_anycost_billing_drop"
SCOPE_VALIDATE = "connections:create_billing_anycost_validate_billing_drop"
SCOPE_LIST = "connections:read_billing_anycost_billing_drops"
SCOPE_READ_MONTH = "connections:read_billing_anycost_billing_drops_month"
SCOPE_READ_CONNECTION = "connections:read_billing"
ALL_SCOPES = frozenset(
    {SCOPE_CREATE, SCOPE_VALIDATE, SCOPE_LIST, SCOPE_READ_MONTH, SCOPE_READ_CONNECTION}
)
WRITE_ONLY_SCOPES = frozenset({SCOPE_CREATE, SCOPE_VALIDATE})

OPERATIONS = ("replace_drop", "replace_hourly", "sum")
LINE_ITEM_TYPES = frozenset(
    {
        "Usage",
        "Tax",
        "Support",
        "Purchase",
        "CommittedUsePurchase",
        "Discount",
        "Credit",
        "Fee",
        "Adjustment",
    }
)
KNOWN_COLUMNS = frozenset(
    {
        "time/usage_start",
        "time/usage_end",
        "cost/cost",
        "cost/discounted_cost",
        "cost/amortized_cost",
        "cost/discounted_amortized_cost",
        "cost/on_demand_cost",
        "resource/id",
        "resource/service",
        "resource/account",
        "resource/region",
        "resource/usage_family",
        "action/operation",
        "action/usage_type",
        "action/account",
        "action/region",
        "usage/amount",
        "usage/units",
        "lineitem/type",
        "lineitem/description",
        "lineitem/id",
        "bill/invoice_id",
        "k8s/cluster",
        "k8s/namespace",
        "k8s/deployment",
        "k8s/labels",
    }
)
NUMERIC_COLUMNS = frozenset(
    {
        "cost/cost",
        "cost/discounted_cost",
        "cost/amortized_cost",
        "cost/discounted_amortized_cost",
        "cost/on_demand_cost",
        "usage/amount",
    }
)
TAG_RE = re.compile(r"^resource/tag:[A-Za-z0-9_.:/=+\-@]+$")
NUMBER_RE = re.compile(r"^\d+(\.\d+)?$")
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")

_BASE = "/v2/connections/billing"
_DROPS_RE = re.compile(rf"^{_BASE}/anycost/([^/]+)/billing_drops$")
_MONTH_ROUTE_RE = re.compile(rf"^{_BASE}/anycost/([^/]+)/billing_drops/([^/]+)$")
_VALIDATE_PATH = f"{_BASE}/anycost/validate_billing_drop"
_CONNECTION_RE = re.compile(rf"^{_BASE}/([^/]+)$")

FaultKind = Literal["status", "commit_then_status", "drop", "commit_then_drop", "stall"]


@dataclass(frozen=True)
class Fault:
    """A scripted failure for the next matching request (POST drops, or GET of a month).

    ``operation`` narrows a POST fault to bodies with that operation (e.g. only a ``sum``
    chunk). A stall sleeps ``seconds`` before answering 200, after committing if ``commit``;
    the request stops counting as in flight while it stalls (the server has finished; the
    network is slow), so a client's retry is not a concurrency violation.
    """

    kind: FaultKind
    status: int = 500
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    commit: bool = True
    operation: str | None = None
    route: Literal["drops", "month"] = "drops"

    @classmethod
    def http(
        cls,
        status: int,
        *,
        retry_after: str | None = None,
        operation: str | None = None,
        route: Literal["drops", "month"] = "drops",
    ) -> Fault:
        headers = (("Retry-After", retry_after),) if retry_after is not None else ()
        return cls("status", status=status, headers=headers, operation=operation, route=route)

    @classmethod
    def commit_then(cls, status: int = 500, *, operation: str | None = None) -> Fault:
        return cls("commit_then_status", status=status, operation=operation)

    @classmethod
    def drop(cls, *, commit: bool = False, operation: str | None = None) -> Fault:
        return cls("commit_then_drop" if commit else "drop", operation=operation)

    @classmethod
    def stall(cls, seconds: float, *, commit: bool = True, operation: str | None = None) -> Fault:
        return cls("stall", seconds=seconds, commit=commit, operation=operation)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the fake saw it (never the Authorization value)."""

    method: str
    path: str
    status: int
    authorized: bool
    operation: str | None = None
    operation_omitted: bool = False
    month: str | None = None
    rows: int = 0
    body_bytes: int = 0
    body: bytes = b""
    fault: str | None = None
    committed: bool = False
    idempotency_key: str | None = None
    content_type: str | None = None
    message: str | None = None


@dataclass
class _StoredRow:
    hour: str
    row: dict[str, str]
    size: int
    drop_id: str


@dataclass
class _Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class _RejectedError(Exception):
    def __init__(self, status: int, message: str, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


def _bad_request(message: str) -> _Response:
    return _Response(400, {"error": {"message": message, "type": "BadRequestError"}})


def _total(values: list[str]) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 200
        return sum((Decimal(v) for v in values), Decimal(0))


class FakeCloudZero(LoopbackServer):
    """Context manager running the fake on a free port; ``url`` is its base URL."""

    def __init__(
        self,
        api_key: str,
        connection_id: str,
        *,
        scopes: frozenset[str] = ALL_SCOPES,
        max_body_bytes: int = 5_000_000,
        max_rows_per_month: int = 1_000_000,
        max_bytes_per_month: int = 70_000_000,
        unknown_cid_status: int = 404,
        missing_auth_status: int = 403,
        concurrent_status: int = 409,
        reject_missing_operation: bool = True,
        strict_hour_alignment: bool = True,
        handling_delay: float = 0.0,
    ) -> None:
        self.connection_id = connection_id
        self.keys: dict[str, frozenset[str]] = {api_key: frozenset(scopes)}
        self.max_body_bytes = max_body_bytes
        self.max_rows_per_month = max_rows_per_month
        self.max_bytes_per_month = max_bytes_per_month
        self.unknown_cid_status = unknown_cid_status
        self.missing_auth_status = missing_auth_status
        self.concurrent_status = concurrent_status
        self.reject_missing_operation = reject_missing_operation
        self.strict_hour_alignment = strict_hour_alignment
        self.handling_delay = handling_delay
        self.requests: list[RequestRecord] = []
        self.concurrency_violations = 0
        self._months: dict[str, list[_StoredRow]] = {}
        self._drops: list[dict[str, Any]] = []
        self._faults: deque[Fault] = deque()
        self._idempotency: dict[tuple[str, str, str], _Response] = {}
        self._state_lock = threading.Lock()
        self._inflight = 0
        super().__init__()

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> FakeCloudZero:
        fake = self

        class Handler(_Handler):
            owner = fake

        self._serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        return self

    # -- scripting ----------------------------------------------------------------------------

    def script(self, *faults: Fault) -> None:
        """Queue faults; each is used once, by the first request it matches."""
        with self._state_lock:
            self._faults.extend(faults)

    def pending_faults(self) -> int:
        with self._state_lock:
            return len(self._faults)

    def add_key(self, api_key: str, scopes: frozenset[str] = ALL_SCOPES) -> None:
        with self._state_lock:
            self.keys[api_key] = frozenset(scopes)

    def _take_fault(self, route: str, operation: str | None) -> Fault | None:
        with self._state_lock:
            for fault in self._faults:
                if fault.route == route and fault.operation in (None, operation):
                    self._faults.remove(fault)
                    return fault
        return None

    # -- assertions ---------------------------------------------------------------------------

    def hour_costs(self, month: str | None = None) -> dict[str, Decimal]:
        """Exact ``cost/cost`` total per hour (``YYYY-MM-DDTHH:00:00Z``) of stored rows."""
        with self._state_lock:
            months = [month] if month else list(self._months)
            by_hour: dict[str, list[str]] = {}
            for m in months:
                for stored in self._months.get(m, []):
                    by_hour.setdefault(stored.hour, []).append(stored.row["cost/cost"])
        return {hour: _total(values) for hour, values in sorted(by_hour.items())}

    def stored_rows(self, month: str | None = None) -> list[dict[str, str]]:
        with self._state_lock:
            months = [month] if month else sorted(self._months)
            return [dict(s.row) for m in months for s in self._months.get(m, [])]

    def row_count(self, month: str) -> int:
        with self._state_lock:
            return len(self._months.get(month, []))

    def months(self) -> list[str]:
        with self._state_lock:
            return sorted(self._months)

    @property
    def drop_ids(self) -> list[str]:
        with self._state_lock:
            return [d["drop_id"] for d in self._drops]

    def posts(self) -> list[RequestRecord]:
        """POSTs to the billing_drops route, in arrival order."""
        return [
            r for r in self.requests if r.method == "POST" and r.path.endswith("/billing_drops")
        ]

    def committed_bodies(self) -> list[bytes]:
        return [r.body for r in self.posts() if r.committed]

    # -- request handling (called by the handler thread) --------------------------------------

    def _enter(self) -> bool:
        with self._state_lock:
            self._inflight += 1
            overlapping = self._inflight > 1
            if overlapping:
                self.concurrency_violations += 1
            return overlapping

    def _leave(self) -> None:
        with self._state_lock:
            self._inflight -= 1

    def _record(self, record: RequestRecord) -> None:
        with self._state_lock:
            self.requests.append(record)

    def _auth(self, header: str | None, scope: str) -> _Response | None:
        if header is None:
            status = self.missing_auth_status
            return _Response(status, {"message": "Unauthorized" if status == 401 else "Forbidden"})
        scopes = self.keys.get(header)
        if scopes is None:  # wrong key, or "Bearer <key>"
            return _Response(403, {"message": "Forbidden"})
        if scope not in scopes:
            return _Response(403, {"message": f"Forbidden: API key lacks scope {scope}"})
        return None

    def _unknown_cid(self) -> _Response:
        status = self.unknown_cid_status
        message = "Connection not found"
        if status == 403:
            return _Response(403, {"message": message})
        return _Response(status, {"error": {"message": message, "type": "NotFoundError"}})

    # Validation of §12.3-14 -------------------------------------------------------------------

    def _parse_body(self, content_type: str | None, raw: bytes) -> dict[str, Any]:
        media = (content_type or "").split(";")[0].strip().lower()
        if media != "application/json":
            raise _RejectedError(
                400, f"Content-Type must be application/json, not {content_type!r}"
            )
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _RejectedError(400, f"body is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise _RejectedError(400, "body must be a JSON object")
        return payload

    def _normalise_month(self, payload: dict[str, Any]) -> str:
        month = payload.get("month")
        if not isinstance(month, str):
            raise _RejectedError(400, "month is required (YYYY-MM)")
        if MONTH_RE.match(month):
            return month
        if ISO_RE.match(month) and MONTH_RE.match(month[:7]):
            return month[:7]
        raise _RejectedError(400, f"month {month!r} is neither YYYY-MM nor an ISO datetime")

    def _row_errors(self, index: int, row: object, month: str) -> tuple[list[str], str | None]:
        """Errors of one row, and its normalised hour when it has a valid start time."""
        where = f"data[{index}]"
        if not isinstance(row, dict):
            return [f"{where} is not an object"], None
        errors: list[str] = []
        for key in ("time/usage_start", "cost/cost"):
            if key not in row:
                errors.append(f"{where} lacks {key}")
        for key, value in row.items():
            if not isinstance(value, str):
                errors.append(f"{where}.{key} must be a string, got {type(value).__name__}")
            if key.startswith("resource/tag:"):
                if not TAG_RE.match(key):
                    errors.append(f"{where}: invalid tag key {key!r}")
            elif key not in KNOWN_COLUMNS:
                errors.append(f"{where}: unknown column {key!r}")
        if any(k.startswith("resource/tag:") for k in row) and not row.get("resource/id"):
            errors.append(f"{where}: resource/tag:* requires a non-empty resource/id")
        for key in NUMERIC_COLUMNS & row.keys():
            value = row[key]
            if isinstance(value, str) and not NUMBER_RE.match(value):
                errors.append(f"{where}.{key} {value!r} is not a plain decimal")
        kind = row.get("lineitem/type")
        if kind is not None and kind not in LINE_ITEM_TYPES:
            errors.append(f"{where}: lineitem/type {kind!r} is not in the enum")
        hour: str | None = None
        for key in ("time/usage_start", "time/usage_end"):
            value = row.get(key)
            if value is None or not isinstance(value, str):
                continue
            if not ISO_RE.match(value) or not (value.endswith("Z") or value.endswith("+00:00")):
                errors.append(f"{where}.{key} {value!r} is not an ISO UTC datetime")
                continue
            moment = datetime.fromisoformat(value).astimezone(UTC)
            if key == "time/usage_end":
                continue
            aligned = moment.replace(minute=0, second=0, microsecond=0)
            if self.strict_hour_alignment and moment != aligned:
                errors.append(f"{where}.{key} {value!r} is not aligned to the hour")
            if moment.strftime("%Y-%m") != month:
                errors.append(f"{where}.{key} {value!r} is outside month {month}")
            hour = aligned.strftime("%Y-%m-%dT%H:00:00Z")
        return errors, hour

    def _validate(self, payload: dict[str, Any]) -> tuple[str, str, bool, list[_StoredRow]]:
        month = self._normalise_month(payload)
        omitted = "operation" not in payload
        operation = payload.get("operation", "replace_drop")
        if operation not in OPERATIONS:
            raise _RejectedError(400, f"operation {operation!r} is not one of {list(OPERATIONS)}")
        data = payload.get("data")
        if not isinstance(data, list):
            raise _RejectedError(400, "data is required and must be a list")
        errors: list[str] = []
        rows: list[_StoredRow] = []
        for index, row in enumerate(data):
            row_errors, hour = self._row_errors(index, row, month)
            errors.extend(row_errors)
            if not row_errors and hour is not None and isinstance(row, dict):
                size = len(json.dumps(row, separators=(",", ":")).encode())
                rows.append(_StoredRow(hour, dict(row), size, ""))
        if errors:
            shown = "; ".join(errors[:5]) + (
                f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
            )
            raise _RejectedError(400, shown)
        return month, operation, omitted, rows

    def _commit(self, month: str, operation: str, rows: list[_StoredRow]) -> _Response:
        drop_id = uuid.uuid4().hex
        with self._state_lock:
            current = self._months.get(month, [])
            if operation == "replace_drop":
                merged: list[_StoredRow] = []
            elif operation == "replace_hourly":
                hours = {r.hour for r in rows}
                merged = [r for r in current if r.hour not in hours]
            else:
                merged = list(current)
            for row in rows:
                row.drop_id = drop_id
            merged.extend(rows)
            if len(merged) > self.max_rows_per_month:
                return _bad_request(
                    f"month {month} would hold {len(merged)} rows; limit {self.max_rows_per_month}"
                )
            size = sum(r.size for r in merged)
            if size > self.max_bytes_per_month:
                return _bad_request(
                    f"month {month} would hold {size} bytes; limit {self.max_bytes_per_month}"
                )
            self._months[month] = merged
            self._drops.append({"drop_id": drop_id, "month": month, "row_count": len(rows)})
        return _Response(
            200,
            {
                "connection": {
                    "drop_id": drop_id,
                    "month": f"{month}-01T00:00:00+00:00",
                    "row_count": len(rows),
                }
            },
        )


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to the fake; never logs the Authorization header."""

    owner: FakeCloudZero
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    wbufsize = -1  # ...buffered into one, flushed in _write
    _finished = False
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # ---------------------------------------------------------------------------------------

    def _write(self, response: _Response) -> None:
        payload = json.dumps(response.body).encode()
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        fake = self.owner
        path = unquote(urlsplit(self.path).path)
        raw = self._read_body()
        overlapping = fake._enter()
        self._finished = False
        record: dict[str, Any] = {
            "method": method,
            "path": path,
            "body_bytes": len(raw),
            "body": raw,
            "authorized": False,
            "content_type": self.headers.get("Content-Type"),
            "idempotency_key": self.headers.get("cloudzero-idempotency-key"),
        }
        response: _Response | None = None
        try:
            if fake.handling_delay:
                time.sleep(fake.handling_delay)
            if overlapping:
                record["fault"] = "concurrent"
                response = _Response(
                    fake.concurrent_status,
                    {"message": "Concurrent requests to the same stream are not supported"},
                )
            else:
                response = self._route(method, path, raw, record)
        finally:
            self._finish(record, response)
        if response is not None:
            self._write(response)

    def _finish(self, record: dict[str, Any], response: _Response | None) -> None:
        """Stop counting the request as in flight and log it (once per request)."""
        if self._finished:
            return
        self._finished = True
        fake = self.owner
        fake._leave()
        status = response.status if response is not None else 0
        if response is not None:
            error = response.body.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            record["message"] = message or response.body.get("message")
        fake._record(RequestRecord(status=status, **record))

    def _idempotent(
        self,
        method: str,
        path: str,
        record: dict[str, Any],
        compute: Callable[[], _Response | None],
    ) -> _Response | None:
        """Replay the first response for a ``cloudzero-idempotency-key`` (§2.6)."""
        key = record["idempotency_key"]
        fake = self.owner
        if key:
            cache_key = (key, method, path)
            with fake._state_lock:
                cached = fake._idempotency.get(cache_key)
            if cached is not None:
                record["fault"] = "idempotent-replay"
                return cached
        response: _Response | None = compute()
        if key and response is not None:
            with fake._state_lock:
                fake._idempotency.setdefault((key, method, path), response)
        return response

    def _route(
        self, method: str, path: str, raw: bytes, record: dict[str, Any]
    ) -> _Response | None:
        fake = self.owner
        auth = self.headers.get("Authorization")
        drops = _DROPS_RE.match(path)
        month_route = _MONTH_ROUTE_RE.match(path)
        connection = _CONNECTION_RE.match(path)
        if method == "POST" and path == _VALIDATE_PATH:
            return self._authorized(auth, SCOPE_VALIDATE, record) or self._validate_only(raw)
        if drops and method in ("POST", "GET"):
            scope = SCOPE_CREATE if method == "POST" else SCOPE_LIST
            denied = self._authorized(auth, scope, record)
            if denied:
                return denied
            if unquote(drops.group(1)) != fake.connection_id:
                return fake._unknown_cid()
            if method == "GET":
                with fake._state_lock:
                    listed = [dict(d) for d in fake._drops]
                for d in listed:
                    d["month"] = f"{d['month']}-01T00:00:00+00:00"
                return _Response(200, {"billing_drops": listed})
            return self._idempotent(method, path, record, lambda: self._post_drop(raw, record))
        if month_route and method == "GET":
            denied = self._authorized(auth, SCOPE_READ_MONTH, record)
            if denied:
                return denied
            if unquote(month_route.group(1)) != fake.connection_id:
                return fake._unknown_cid()
            return self._read_month(month_route.group(2), record)
        if connection and method == "GET" and connection.group(1) != "anycost":
            denied = self._authorized(auth, SCOPE_READ_CONNECTION, record)
            if denied:
                return denied
            if unquote(connection.group(1)) != fake.connection_id:
                return fake._unknown_cid()
            return _Response(
                200,
                {
                    "connection": {
                        "id": fake.connection_id,
                        "connection_id": fake.connection_id,
                        "name": "fake-anycost-stream",
                        "connection_type": "CustomConnection",
                        "is_enabled": True,
                    }
                },
            )
        return _Response(
            404, {"error": {"message": f"no route {method} {path}", "type": "NotFound"}}
        )

    def _authorized(self, auth: str | None, scope: str, record: dict[str, Any]) -> _Response | None:
        denied = self.owner._auth(auth, scope)
        record["authorized"] = denied is None
        return denied

    def _validate_only(self, raw: bytes) -> _Response:
        fake = self.owner
        if len(raw) > fake.max_body_bytes:
            return _Response(413, {"message": "Request Entity Too Large"})
        try:
            fake._validate(fake._parse_body(self.headers.get("Content-Type"), raw))
        except _RejectedError as exc:
            return _Response(200, {"connection": {"is_valid": False, "errors": [exc.message]}})
        return _Response(200, {"connection": {"is_valid": True, "errors": []}})

    def _read_month(self, month: str, record: dict[str, Any]) -> _Response | None:
        fake = self.owner
        fault = fake._take_fault("month", None)
        if fault is not None:
            record["fault"] = fault.kind
            if fault.kind == "status":
                return _Response(fault.status, {"message": "scripted fault"}, dict(fault.headers))
            if fault.kind == "drop":
                self.close_connection = True
                self._finish(record, None)
                return None
        if not MONTH_RE.match(month):
            return _bad_request(f"month {month!r} is not YYYY-MM")
        with fake._state_lock:
            if month not in fake._months:
                return _Response(
                    404, {"error": {"message": f"no billing drop for {month}", "type": "NotFound"}}
                )
            rows = [dict(s.row) for s in fake._months[month]]
        return _Response(200, {"billing_drop": rows})

    def _post_drop(self, raw: bytes, record: dict[str, Any]) -> _Response | None:
        fake = self.owner
        if len(raw) > fake.max_body_bytes:
            return _Response(413, {"message": "Request Entity Too Large"})
        try:
            payload = fake._parse_body(self.headers.get("Content-Type"), raw)
            month, operation, omitted, rows = fake._validate(payload)
        except _RejectedError as exc:
            return _Response(exc.status, {"error": {"message": exc.message, "type": exc.kind}})
        record.update(month=month, operation=operation, operation_omitted=omitted, rows=len(rows))
        if omitted and fake.reject_missing_operation:
            return _bad_request("operation omitted: the default replace_drop would wipe the month")

        fault = fake._take_fault("drops", operation)
        if fault is not None:
            record["fault"] = fault.kind
        if fault is not None and fault.kind == "status":
            return _Response(fault.status, {"message": "scripted fault"}, dict(fault.headers))
        if fault is not None and fault.kind == "drop":
            self.close_connection = True
            self._finish(record, None)
            return None
        if fault is not None and fault.kind == "stall" and not fault.commit:
            late = _Response(500, {"message": "stalled, not committed"})
            self._finish(record, late)
            self._stall(fault.seconds, late)
            return None

        response = fake._commit(month, operation, rows)
        record["committed"] = response.status == 200
        if fault is None:
            return response
        if fault.kind == "commit_then_status":
            return _Response(fault.status, {"message": "scripted failure after commit"})
        if fault.kind == "commit_then_drop":
            self.close_connection = True
            self._finish(record, None)
            return None
        # stall after commit
        self._finish(record, response)
        self._stall(fault.seconds, response)
        return None

    def _stall(self, seconds: float, response: _Response) -> None:
        """Answer late (the client has usually timed out and closed the socket by then)."""
        time.sleep(seconds)
        self._write(response)
        self.close_connection = True
