"""A local fake of a LiteLLM proxy's ``GET /spend/logs/v2``, over real HTTP on 127.0.0.1.

It reproduces the semantics the API source depends on, as read in LiteLLM's
``ui_view_spend_logs`` and seen on litellm 1.108.7: Bearer auth with the master key, both dates
inclusive on ``startTime`` at second resolution, ``sort_by``/``sort_order``, offset pagination with
``page``/``page_size`` (1-1000, 422 otherwise), the ``{data, total, page, page_size, total_pages,
total_is_capped}`` envelope with ``total`` capped (10,000 by default; lower it to test splitting
with few rows; the rows themselves are not capped, as in LiteLLM), and rows without ``messages``,
``response`` or ``proxy_server_request``. Tests can script faults (HTTP errors, slow answers,
dropped connections, rows arriving mid-read) and assert on the request log.

Rows are built from the real v2 sample in ``cz_pipeline_tests/data/GET_spend_logs_v2.json``.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from cz_pipeline_tests.fakes.loopback import LoopbackServer

SAMPLE_PATH = Path(__file__).resolve().parent.parent / "data" / "GET_spend_logs_v2.json"
COUNT_CAP = 10_000
_HIDDEN_FIELDS = ("messages", "response", "proxy_server_request")
_SORTABLE = ("startTime", "endTime", "spend", "total_tokens", "request_duration_ms", "model")


def sample_rows() -> list[dict[str, Any]]:
    """The 22 real rows LiteLLM 1.108.7 returned from ``/spend/logs/v2`` (fresh copies)."""
    body = json.loads(SAMPLE_PATH.read_text(encoding="utf-8"))
    return cast(list[dict[str, Any]], body["data"])


def iso_ms(moment: datetime) -> str:
    """How v2 spells a timestamp: ``2026-11-27T16:15:41.147+00:00``."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return utc.isoformat(timespec="milliseconds")


def rows_at(moments: Sequence[datetime], *, prefix: str = "req") -> list[dict[str, Any]]:
    """Real sample rows, cycled, re-dated to ``moments`` with unique request ids.

    ``endTime`` keeps each sample row's duration, so rows stay internally consistent.
    """
    samples = sample_rows()
    rows = []
    for index, moment in enumerate(moments):
        row = copy.deepcopy(samples[index % len(samples)])
        duration = _parse(row["endTime"]) - _parse(row["startTime"])
        row["request_id"] = f"{prefix}-{index:05d}"
        row["startTime"] = iso_ms(moment)
        row["endTime"] = iso_ms(moment + duration)
        if row.get("completionStartTime"):
            row["completionStartTime"] = row["endTime"]
        rows.append(row)
    return rows


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@dataclass(frozen=True)
class FakeRequest:
    """One request the fake received (the Authorization header itself is not kept)."""

    path: str
    params: dict[str, str]
    authorized: bool
    status: int

    @property
    def start_date(self) -> str:
        return self.params.get("start_date", "")

    @property
    def end_date(self) -> str:
        return self.params.get("end_date", "")


@dataclass
class _Fault:
    status: int | None = None  # None: drop the connection without an answer
    detail: str = "Internal Server Error"
    delay: float = 0.0  # sleep first, then answer normally (for client timeouts)


@dataclass
class _State:
    rows: list[tuple[datetime, dict[str, Any]]]
    faults: deque[_Fault] = field(default_factory=deque)
    inserts: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[FakeRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeLiteLLM(LoopbackServer):
    """``with FakeLiteLLM(rows, master_key) as fake:`` serves ``fake.url`` until the block ends."""

    def __init__(
        self, rows: Sequence[dict[str, Any]], master_key: str, *, count_cap: int = COUNT_CAP
    ) -> None:
        self.master_key = master_key
        self.count_cap = count_cap
        self._state = _State(rows=[(_naive(row["startTime"]), dict(row)) for row in rows])
        super().__init__()

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> FakeLiteLLM:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._serve(server)
        return self

    # -- scripting ------------------------------------------------------------------------

    def fail_next(self, status: int = 500, times: int = 1, detail: str | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` and ``{"detail": detail}``."""
        text = detail if detail is not None else f"simulated HTTP {status}"
        with self._state.lock:
            self._state.faults.extend(_Fault(status=status, detail=text) for _ in range(times))

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Hold the next ``times`` requests for ``seconds`` before answering them normally."""
        with self._state.lock:
            self._state.faults.extend(_Fault(status=200, delay=seconds) for _ in range(times))

    def disconnect_next(self, times: int = 1) -> None:
        """Close the connection of the next ``times`` requests without answering."""
        with self._state.lock:
            self._state.faults.extend(_Fault(status=None) for _ in range(times))

    def insert_after(self, request_number: int, rows: Sequence[dict[str, Any]]) -> None:
        """Add ``rows`` to the table right after the ``request_number``-th request (1-based),
        the way LiteLLM's batch writer lands rows while someone pages."""
        with self._state.lock:
            self._state.inserts.setdefault(request_number, []).extend(rows)

    @property
    def requests(self) -> list[FakeRequest]:
        with self._state.lock:
            return list(self._state.requests)

    # -- serving (called from handler threads) --------------------------------------------

    def _next_fault(self) -> _Fault | None:
        with self._state.lock:
            return self._state.faults.popleft() if self._state.faults else None

    def _record(self, request: FakeRequest) -> None:
        with self._state.lock:
            self._state.requests.append(request)
            pending = self._state.inserts.pop(len(self._state.requests), [])
            self._state.rows.extend((_naive(row["startTime"]), dict(row)) for row in pending)

    def _answer(self, params: dict[str, str]) -> tuple[int, Any]:
        """LiteLLM's answer to ``GET /spend/logs/v2`` for authorized ``params``."""
        problems: list[dict[str, Any]] = []
        page = _int_param(params, "page", 1, problems, low=1)
        page_size = _int_param(params, "page_size", 50, problems, low=1, high=1000)
        if problems:
            return 422, {"detail": problems}
        if "start_date" not in params or "end_date" not in params:
            return 400, {"error": {"message": "Start date and end date are required"}}
        try:
            start, end = _date_param(params["start_date"]), _date_param(params["end_date"])
        except ValueError as exc:
            return 400, {"error": {"message": f"Invalid date format: {exc}"}}
        sort_by = params.get("sort_by", "startTime")
        if sort_by not in _SORTABLE:
            return 400, {"error": {"message": f"Invalid sort_by: {sort_by}"}}
        descending = params.get("sort_order", "desc").lower() != "asc"

        with self._state.lock:
            matching = [row for moment, row in self._state.rows if start <= moment <= end]
        if sort_by == "startTime":
            matching.sort(key=lambda row: _naive(row["startTime"]), reverse=descending)
        elif sort_by == "endTime":
            matching.sort(key=lambda row: _naive(row["endTime"]), reverse=descending)
        else:
            matching.sort(key=lambda row: row.get(sort_by) or 0, reverse=descending)

        total = min(len(matching), self.count_cap)
        offset = (page - 1) * page_size
        data = [
            {k: v for k, v in row.items() if k not in _HIDDEN_FIELDS}
            for row in matching[offset : offset + page_size]
        ]
        return 200, {
            "data": data,
            "total": total,
            "page": page,
            "page_size": page_size,
            "total_pages": math.ceil(total / page_size),
            "total_is_capped": len(matching) > self.count_cap,
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeLiteLLM


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        params = {key: values[-1] for key, values in parse_qs(url.query).items()}
        authorized = self.headers.get("Authorization", "") == f"Bearer {fake.master_key}"
        fault = fake._next_fault() if url.path == "/spend/logs/v2" else None

        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.status is None:
            fake._record(FakeRequest(url.path, params, authorized, 0))
            self.close_connection = True
            return
        if fault is not None and fault.status != 200:
            status, body = fault.status or 500, {"detail": fault.detail}
        elif url.path != "/spend/logs/v2":
            status, body = 404, {"detail": "Not Found"}
        elif not authorized:
            received = self.headers.get("Authorization", "").removeprefix("Bearer ")
            # LiteLLM abbreviates the key it received; echoing it whole makes the fake harsher,
            # so a client that leaks server messages into errors or logs is caught.
            detail = (
                "Authentication Error, Invalid proxy server token passed. "
                f"Received API Key = {received}. Unable to find token in cache or "
                "`LiteLLM_VerificationTokenTable`"
            )
            status, body = 401, {"detail": detail}
        else:
            status, body = fake._answer(params)
        fake._record(FakeRequest(url.path, params, authorized, status))
        self._send(status, body)

    def _send(self, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test); nothing to answer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


def _naive(text: str) -> datetime:
    """A v2 timestamp as LiteLLM stores it: naive UTC, millisecond precision."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _date_param(text: str) -> datetime:
    """``YYYY-MM-DD HH:MM:SS`` or ``YYYY-MM-DD``, UTC, exact to the second (``.000``)."""
    for layout in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, layout)
        except ValueError:
            continue
    raise ValueError(f"{text!r} is not YYYY-MM-DD HH:MM:SS")


def _int_param(
    params: dict[str, str],
    name: str,
    default: int,
    problems: list[dict[str, Any]],
    *,
    low: int,
    high: int | None = None,
) -> int:
    """FastAPI-style validation: collect 422 details instead of raising."""
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        problems.append(
            {"loc": ["query", name], "msg": "Input should be a valid integer", "input": raw}
        )
        return default
    if value < low:
        problems.append(
            {"loc": ["query", name], "msg": f"Input should be greater than or equal to {low}"}
        )
    elif high is not None and value > high:
        problems.append(
            {"loc": ["query", name], "msg": f"Input should be less than or equal to {high}"}
        )
    return value


def moment(text: str) -> datetime:
    """``"2026-11-27 10:59:59.999"`` as an aware UTC datetime, for readable tests."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def spread(start: datetime, count: int, span: timedelta) -> list[datetime]:
    """``count`` moments evenly spread over ``[start, start + span)``, millisecond aligned."""
    step_ms = span // timedelta(milliseconds=1) // max(count, 1)
    return [start + timedelta(milliseconds=i * step_ms) for i in range(count)]
