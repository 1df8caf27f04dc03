"""The CloudZero client against the local fake over real HTTP (and a few pure unit tests)."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from email.utils import format_datetime
from typing import Any

import httpx
import pyarrow as pa
import pytest

from cz_pipeline.lib.cbf import (
    DEFAULT_GRAIN,
    build_line_items,
    decimal_sum_by_hour,
    line_items_for_hour,
)
from cz_pipeline.lib.cloudzero import (
    EMPTY_HOUR_RESOURCE_ID,
    BodyTooLargeError,
    CloudZeroClient,
    CloudZeroError,
    CloudZeroReadScopeError,
    HourReceipt,
    empty_hour_line_items,
    parse_retry_after,
    render_bodies,
)
from cz_pipeline_tests.fakes.cloudzero import (
    ALL_SCOPES,
    SCOPE_CREATE,
    WRITE_ONLY_SCOPES,
    FakeCloudZero,
    Fault,
)
from cz_pipeline_tests.test_cbf import AWKWARD_MODELS, AWKWARD_SPENDS, lake_table

API_KEY = "czAPIkey" + "Q7x9Lm2P" * 3 + "zz0011"  # 38 characters, like CloudZero's example
CONNECTION_ID = "1234abcd-1234-abcd-1234-abcd1234efgh"
DAY = datetime(2025, 1, 31, tzinfo=UTC)


class Sleeps(list[float]):
    """Records backoff waits instead of sleeping, so tests stay fast and can assert on them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def fake() -> Iterator[FakeCloudZero]:
    with FakeCloudZero(API_KEY, CONNECTION_ID) as server:
        yield server


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make_client(fake: FakeCloudZero, sleeps: Sleeps, **overrides: Any) -> CloudZeroClient:
    options: dict[str, Any] = {
        "timeout": 2.0,
        "backoff_base": 0.001,
        "max_attempts": 5,
        "sleep": sleeps,
        "rng": random.Random(0),
    }
    options.update(overrides)
    api_key = options.pop("api_key", API_KEY)
    return CloudZeroClient(fake.url, api_key, CONNECTION_ID, **options)


def day_lake(start: datetime = DAY, hours: int = 24, per_hour: int = 40) -> pa.Table:
    rng = random.Random(5)
    rows = []
    for h in range(hours):
        for i in range(per_hour):
            rows.append(
                {
                    "start_time": start + timedelta(hours=h, seconds=rng.randrange(3600)),
                    "model": rng.choice(AWKWARD_MODELS[:5]),
                    "team_id": f"team-{rng.randrange(3)}",
                    "user_id": f"user-{rng.randrange(4)}",
                    "spend": rng.choice(AWKWARD_SPENDS),
                    "prompt_tokens": rng.randrange(1, 500),
                    "total_tokens": rng.randrange(1, 900),
                    "status": "failure" if i % 13 == 0 else "success",
                }
            )
    return lake_table(rows)


def wire_hour(hour: datetime) -> str:
    return hour.strftime("%Y-%m-%dT%H:00:00Z")


def one_hour_items(hour: datetime = DAY, rows: int = 40) -> pa.Table:
    return build_line_items(day_lake(hour, hours=1, per_hour=rows), DEFAULT_GRAIN)


# ---------------------------------------------------------------------------------------------
# Happy path, idempotency, months


def test_day_uploaded_twice_keeps_exact_hourly_totals(fake: FakeCloudZero, sleeps: Sleeps) -> None:
    lake = day_lake()
    expected = {wire_hour(h): c for h, c in decimal_sum_by_hour(lake).items()}
    items = build_line_items(lake, DEFAULT_GRAIN)
    with make_client(fake, sleeps) as client:
        for _ in range(2):
            for hour in (DAY + timedelta(hours=h) for h in range(24)):
                receipt = client.send_hour(hour, line_items_for_hour(items, wire_hour(hour)))
                assert receipt.chunks == 1
                assert receipt.attempts == 1
                assert receipt.drop_ids == (fake.drop_ids[-1],)
            assert fake.hour_costs() == expected
    assert len(expected) == 24
    assert fake.row_count("2025-01") == items.num_rows
    posts = fake.posts()
    assert len(posts) == 48
    assert {p.operation for p in posts} == {"replace_hourly"}
    assert fake.concurrency_violations == 0
    assert sleeps == []


def test_hour_23_of_the_last_day_and_midnight_go_to_their_own_months(
    fake: FakeCloudZero, sleeps: Sleeps
) -> None:
    lake = day_lake(datetime(2025, 1, 31, 23, tzinfo=UTC), hours=2, per_hour=5)
    items = build_line_items(lake, DEFAULT_GRAIN)
    with make_client(fake, sleeps) as client:
        jan = client.send_hour(
            datetime(2025, 1, 31, 23, tzinfo=UTC),
            line_items_for_hour(items, "2025-01-31T23:00:00Z"),
        )
        feb = client.send_hour(
            datetime(2025, 2, 1, 0, tzinfo=UTC), line_items_for_hour(items, "2025-02-01T00:00:00Z")
        )
    assert (jan.month, feb.month) == ("2025-01", "2025-02")
    assert [p.month for p in fake.posts()] == ["2025-01", "2025-02"]
    assert list(fake.hour_costs("2025-01")) == ["2025-01-31T23:00:00Z"]
    assert list(fake.hour_costs("2025-02")) == ["2025-02-01T00:00:00Z"]


def test_an_emptied_hour_is_cleared_and_other_hours_stay(
    fake: FakeCloudZero, sleeps: Sleeps
) -> None:
    lake = day_lake(hours=2, per_hour=10)
    items = build_line_items(lake, DEFAULT_GRAIN)
    first, second = DAY, DAY + timedelta(hours=1)
    with make_client(fake, sleeps) as client:
        client.send_hour(first, line_items_for_hour(items, wire_hour(first)))
        client.send_hour(second, line_items_for_hour(items, wire_hour(second)))
        before = fake.hour_costs()
        receipt = client.send_hour(first, line_items_for_hour(items, wire_hour(first)).slice(0, 0))
    assert receipt.placeholder
    assert receipt.rows == 1
    after = fake.hour_costs()
    assert after[wire_hour(first)] == 0
    assert after[wire_hour(second)] == before[wire_hour(second)] != 0
    stored = [r for r in fake.stored_rows() if r["time/usage_start"] == wire_hour(first)]
    assert [r["resource/id"] for r in stored] == [EMPTY_HOUR_RESOURCE_ID]


# ---------------------------------------------------------------------------------------------
# Retries converge to exact totals


@pytest.mark.parametrize(
    "fault",
    [
        Fault.http(500),
        Fault.http(503),
        Fault.commit_then(500),
        Fault.drop(),
        Fault.drop(commit=True),
        Fault.stall(1.0, commit=True),
        Fault.stall(1.0, commit=False),
    ],
    ids=[
        "500",
        "503",
        "commit-then-500",
        "drop",
        "commit-then-drop",
        "timeout",
        "timeout-nocommit",
    ],
)
def test_transient_failures_retry_to_exact_totals(
    fake: FakeCloudZero, sleeps: Sleeps, fault: Fault
) -> None:
    lake = day_lake(hours=1)
    items = build_line_items(lake, DEFAULT_GRAIN)
    expected = {wire_hour(h): c for h, c in decimal_sum_by_hour(lake).items()}
    assert expected == {wire_hour(DAY): sum_costs(items)}
    fake.script(fault)
    with make_client(fake, sleeps, timeout=0.3) as client:
        receipt = client.send_hour(DAY, items)
    assert fake.hour_costs() == expected
    assert receipt.attempts == 2
    assert receipt.requests == 2
    assert len(sleeps) == 1
    assert fake.pending_faults() == 0
    assert fake.concurrency_violations == 0


@pytest.mark.parametrize("header", ["2", "http-date"])
def test_429_honours_retry_after(fake: FakeCloudZero, sleeps: Sleeps, header: str) -> None:
    if header == "http-date":
        header = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    items = one_hour_items()
    fake.script(Fault.http(429, retry_after=header))
    with make_client(fake, sleeps) as client:
        receipt = client.send_hour(DAY, items)
    assert receipt.attempts == 2
    assert len(sleeps) == 1
    assert sleeps[0] >= 1.5  # the header said 2 s / 3 s from now; backoff alone is ~0.001 s
    assert fake.hour_costs() == {wire_hour(DAY): sum_costs(items)}


def test_retry_after_beyond_the_cap_fails_instead_of_waiting(
    fake: FakeCloudZero, sleeps: Sleeps
) -> None:
    fake.script(Fault.http(429, retry_after="3600"))
    with (
        make_client(fake, sleeps, max_retry_after=60) as client,
        pytest.raises(CloudZeroError) as info,
    ):
        client.send_hour(DAY, one_hour_items())
    assert info.value.status == 429
    assert sleeps == []


def test_retries_give_up_after_max_attempts(fake: FakeCloudZero, sleeps: Sleeps) -> None:
    fake.script(*[Fault.http(502)] * 3)
    with make_client(fake, sleeps, max_attempts=3) as client, pytest.raises(CloudZeroError) as info:
        client.send_hour(DAY, one_hour_items())
    assert info.value.status == 502
    assert info.value.attempts == 3
    assert info.value.hour == DAY
    assert len(fake.posts()) == 3
    assert len(sleeps) == 2
    assert fake.hour_costs() == {}


# ---------------------------------------------------------------------------------------------
# Chunking and 413


def sum_costs(items: pa.Table) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 200  # Python's default 28 digits would round these sums
        return sum((Decimal(c) for c in items["cost/cost"].to_pylist()), Decimal(0))


def test_an_oversized_hour_is_chunked_replace_then_sum(fake: FakeCloudZero, sleeps: Sleeps) -> None:
    items = one_hour_items(rows=200)
    limit = 4_000
    with make_client(fake, sleeps, max_body_bytes=limit) as client:
        receipt = client.send_hour(DAY, items)
        # Re-sending replaces: still exact, never doubled.
        client.send_hour(DAY, items)
    posts = fake.posts()
    assert receipt.chunks >= 3
    assert len(posts) == 2 * receipt.chunks
    operations = [p.operation for p in posts[: receipt.chunks]]
    assert operations == ["replace_hourly"] + ["sum"] * (receipt.chunks - 1)
    assert all(p.body_bytes <= limit for p in posts)
    assert sum(p.rows for p in posts[: receipt.chunks]) == items.num_rows
    assert fake.hour_costs() == {wire_hour(DAY): sum_costs(items)}
    assert fake.row_count("2025-01") == items.num_rows


@pytest.mark.parametrize(
    "fault", [Fault.commit_then(500, operation="sum"), Fault.drop(commit=True, operation="sum")]
)
def test_a_failed_sum_chunk_restarts_the_hour_from_replace_hourly(
    fake: FakeCloudZero, sleeps: Sleeps, fault: Fault
) -> None:
    items = one_hour_items(rows=200)
    fake.script(fault)
    with make_client(fake, sleeps, max_body_bytes=4_000) as client:
        receipt = client.send_hour(DAY, items)
    operations = [p.operation for p in fake.posts()]
    # attempt 1: replace_hourly, sum (committed, then failed) / attempt 2: the whole hour again
    assert operations[:3] == ["replace_hourly", "sum", "replace_hourly"]
    assert operations[2:] == ["replace_hourly"] + ["sum"] * (receipt.chunks - 1)
    assert receipt.attempts == 2
    assert fake.hour_costs() == {wire_hour(DAY): sum_costs(items)}
    assert fake.row_count("2025-01") == items.num_rows


def test_413_re_splits_the_hour_into_smaller_chunks(sleeps: Sleeps) -> None:
    items = one_hour_items(rows=120)
    with FakeCloudZero(API_KEY, CONNECTION_ID, max_body_bytes=6_000) as fake:
        with make_client(fake, sleeps, max_body_bytes=20_000) as client:
            receipt = client.send_hour(DAY, items)
        statuses = [p.status for p in fake.posts()]
        assert statuses[:2] == [413, 413]
        assert set(statuses[2:]) == {200}
        assert receipt.max_body_bytes == 5_000
        assert all(p.body_bytes <= 5_000 for p in fake.posts()[2:])
        assert fake.hour_costs() == {wire_hour(DAY): sum_costs(items)}
        assert sleeps == []  # a 413 is not a transient failure: no backoff


def test_render_bodies_is_byte_for_byte_what_was_sent(fake: FakeCloudZero, sleeps: Sleeps) -> None:
    items = one_hour_items(rows=200)
    with make_client(fake, sleeps, max_body_bytes=5_000) as client:
        receipt = client.send_hour(DAY, items)
    bodies = render_bodies(DAY, items, 5_000)
    assert fake.committed_bodies() == bodies
    assert receipt.body_sha256 == tuple(hashlib.sha256(b).hexdigest() for b in bodies)
    assert receipt.bytes == sum(len(b) for b in bodies)


# ---------------------------------------------------------------------------------------------
# Fail fast


def test_403_fails_fast_with_cloudzeros_message(fake: FakeCloudZero, sleeps: Sleeps) -> None:
    with (
        make_client(fake, sleeps, api_key=API_KEY[::-1]) as client,
        pytest.raises(CloudZeroError) as info,
    ):
        client.send_hour(DAY, one_hour_items())
    error = info.value
    assert (error.status, error.message, error.hour, error.month) == (
        403,
        "Forbidden",
        DAY,
        "2025-01",
    )
    assert "Forbidden" in str(error)
    assert "2025-01-31T00:00Z" in str(error)
    assert len(fake.requests) == 1
    assert sleeps == []


def test_a_key_without_the_create_scope_gets_403(sleeps: Sleeps) -> None:
    with FakeCloudZero(API_KEY, CONNECTION_ID, scopes=ALL_SCOPES - {SCOPE_CREATE}) as fake:
        with make_client(fake, sleeps) as client, pytest.raises(CloudZeroError) as info:
            client.send_hour(DAY, one_hour_items())
        assert info.value.status == 403
        assert SCOPE_CREATE in info.value.message
        assert len(fake.requests) == 1


def test_400_fails_fast_with_cloudzeros_message(fake: FakeCloudZero, sleeps: Sleeps) -> None:
    bad = empty_hour_line_items(DAY).set_column(1, "cost/cost", pa.array(["1e-05"]))
    with make_client(fake, sleeps) as client, pytest.raises(CloudZeroError) as info:
        client.send_hour(DAY, bad)
    assert info.value.status == 400
    assert "'1e-05' is not a plain decimal" in info.value.message
    assert len(fake.requests) == 1
    assert sleeps == []


def test_unknown_connection_fails_fast(fake: FakeCloudZero, sleeps: Sleeps) -> None:
    client = CloudZeroClient(fake.url, API_KEY, "other-connection", sleep=sleeps)
    with client, pytest.raises(CloudZeroError) as info:
        client.send_hour(DAY, one_hour_items())
    assert info.value.status == 404
    assert "Connection not found" in info.value.message


# ---------------------------------------------------------------------------------------------
# Secrets


@pytest.mark.parametrize(
    "scenario", ["exhausted", "forbidden-scope", "timeout", "bad-request", "read-scope"]
)
def test_the_api_key_never_appears_in_errors_logs_or_receipts(
    caplog: pytest.LogCaptureFixture, sleeps: Sleeps, scenario: str
) -> None:
    caplog.set_level(logging.DEBUG)
    scopes = {"forbidden-scope": ALL_SCOPES - {SCOPE_CREATE}, "read-scope": WRITE_ONLY_SCOPES}
    texts: list[str] = []
    fake_server = FakeCloudZero(API_KEY, CONNECTION_ID, scopes=scopes.get(scenario, ALL_SCOPES))
    with fake_server as fake, make_client(fake, sleeps, timeout=0.3, max_attempts=2) as client:
        texts.append(repr(client))
        if scenario != "forbidden-scope":
            receipt = client.send_hour(DAY, one_hour_items())
            texts += [repr(receipt), json.dumps(receipt.to_metadata())]
        if scenario == "exhausted":
            fake.script(Fault.http(500), Fault.http(500))
        elif scenario == "timeout":
            fake.script(Fault.stall(1.0), Fault.stall(1.0))
        items = one_hour_items()
        if scenario == "bad-request":
            items = empty_hour_line_items(DAY).set_column(1, "cost/cost", pa.array(["-1"]))

        def fail() -> object:
            if scenario == "read-scope":
                return client.read_month("2025-01")
            return client.send_hour(DAY, items)

        with pytest.raises(CloudZeroError) as info:
            fail()
    error = info.value
    texts += [str(error), repr(error), error.message, caplog.text]
    texts += [str(a) for a in error.args]
    assert caplog.text  # something was logged, so the check below means something
    for text in texts:
        assert API_KEY not in text


@pytest.mark.usefixtures("fake")
def test_a_key_echoed_by_the_server_is_redacted(sleeps: Sleeps) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        echoed = request.headers["Authorization"]
        return httpx.Response(400, json={"error": {"message": f"bad key {echoed}", "type": "x"}})

    client = CloudZeroClient(
        "https://cz.invalid", API_KEY, CONNECTION_ID, transport=httpx.MockTransport(answer)
    )
    with client, pytest.raises(CloudZeroError) as info:
        client.send_hour(DAY, one_hour_items())
    assert API_KEY not in str(info.value)
    assert "[redacted]" in info.value.message


# ---------------------------------------------------------------------------------------------
# Reading a month back


def test_read_month_returns_exact_hourly_totals(fake: FakeCloudZero, sleeps: Sleeps) -> None:
    lake = day_lake(hours=3, per_hour=15)
    items = build_line_items(lake, DEFAULT_GRAIN)
    with make_client(fake, sleeps) as client:
        for h in range(3):
            hour = DAY + timedelta(hours=h)
            client.send_hour(hour, line_items_for_hour(items, wire_hour(hour)))
        fake.script(Fault.http(503, route="month"))
        contents = client.read_month("2025-01")
        missing = client.read_month("2024-12")
    assert contents.found
    assert contents.rows == items.num_rows
    assert contents.hour_costs == decimal_sum_by_hour(lake)
    assert not missing.found
    assert missing.hour_costs == {}
    assert len(sleeps) == 1


def test_read_month_without_read_scope_raises_a_distinct_error(sleeps: Sleeps) -> None:
    fake_server = FakeCloudZero(API_KEY, CONNECTION_ID, scopes=WRITE_ONLY_SCOPES)
    with fake_server as fake, make_client(fake, sleeps) as client:
        client.send_hour(DAY, one_hour_items())  # writing still works
        with pytest.raises(CloudZeroReadScopeError) as info:
            client.read_month("2025-01")
    assert info.value.status == 403
    assert "read_billing_anycost_billing_drops_month" in info.value.message


# ---------------------------------------------------------------------------------------------
# Serial requests


def test_the_client_serialises_requests_from_many_threads(sleeps: Sleeps) -> None:
    lake = day_lake(hours=6, per_hour=5)
    items = build_line_items(lake, DEFAULT_GRAIN)
    with FakeCloudZero(API_KEY, CONNECTION_ID, handling_delay=0.03) as fake:
        with make_client(fake, sleeps) as client:
            errors: list[BaseException] = []

            def send(h: int) -> None:
                hour = DAY + timedelta(hours=h)
                try:
                    client.send_hour(hour, line_items_for_hour(items, wire_hour(hour)))
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=send, args=(h,)) for h in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert errors == []
        assert fake.concurrency_violations == 0
        assert fake.hour_costs() == {wire_hour(h): c for h, c in decimal_sum_by_hour(lake).items()}


def test_the_fake_rejects_overlapping_requests() -> None:
    body = render_bodies(DAY, one_hour_items())[0]
    with FakeCloudZero(API_KEY, CONNECTION_ID, handling_delay=0.3) as fake:
        url = f"{fake.url}/v2/connections/billing/anycost/{CONNECTION_ID}/billing_drops"
        statuses: list[int] = []

        def post() -> None:
            headers = {"Authorization": API_KEY, "Content-Type": "application/json"}
            statuses.append(httpx.post(url, content=body, headers=headers, timeout=5).status_code)

        threads = [threading.Thread(target=post) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [200, 409]
        assert fake.concurrency_violations == 1


# ---------------------------------------------------------------------------------------------
# The fake is strict (it exists to catch client bugs)


def _row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "time/usage_start": "2025-01-31T00:00:00Z",
        "cost/cost": "0.5",
        "resource/id": "czrn:litellm:openai:cross-region:t:llm-usage:m-1",
        "resource/tag:team": "t",
    }
    row.update(changes)
    return {k: v for k, v in row.items() if v is not ...}


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (
            {"month": "2025-01", "operation": "sum", "data": [_row(**{"cost/cost": 0.5})]},
            None,
            "must be a string",
        ),
        (
            {"month": "2025-01", "operation": "sum", "data": [_row(**{"resource/id": None})]},
            None,
            "must be a string",
        ),
        (
            {"month": "2025-01", "operation": "sum", "data": [_row(**{"cost/costs": "1"})]},
            None,
            "unknown column",
        ),
        (
            {"month": "2025-01", "operation": "sum", "data": [_row(**{"resource/tag:a b": "1"})]},
            None,
            "invalid tag key",
        ),
        (
            {"month": "2025-01", "operation": "sum", "data": [_row(**{"resource/id": ...})]},
            None,
            "requires a non-empty resource/id",
        ),
        (
            {"month": "2025-01", "operation": "sum", "data": [_row(**{"cost/cost": "1e-05"})]},
            None,
            "plain decimal",
        ),
        (
            {"month": "2025-01", "operation": "sum", "data": [_row(**{"cost/cost": "-0.1"})]},
            None,
            "plain decimal",
        ),
        (
            {"month": "2025-01", "operation": "sum", "data": [_row(**{"usage/amount": ".5"})]},
            None,
            "plain decimal",
        ),
        (
            {"month": "2025-01", "operation": "sum", "data": [_row(**{"lineitem/type": "Bogus"})]},
            None,
            "enum",
        ),
        ({"month": "2025-02", "operation": "sum", "data": [_row()]}, None, "outside month"),
        (
            {
                "month": "2025-01",
                "operation": "sum",
                "data": [_row(**{"time/usage_start": "2025-01-31T00:30:00Z"})],
            },
            None,
            "aligned",
        ),
        (
            {
                "month": "2025-01",
                "operation": "sum",
                "data": [_row(**{"time/usage_start": "2025-01-31T00:00:00+01:00"})],
            },
            None,
            "UTC",
        ),
        (
            {"month": "2025-01", "operation": "sum", "data": [_row(**{"cost/cost": ...})]},
            None,
            "lacks cost/cost",
        ),
        ({"month": "2025-01", "data": [_row()]}, None, "operation omitted"),
        ({"month": "2025-01", "operation": "append", "data": [_row()]}, None, "operation"),
        ({"operation": "sum", "data": [_row()]}, None, "month is required"),
        ({"month": "2025-01", "operation": "sum", "data": {}}, None, "must be a list"),
        ([1, 2], None, "JSON object"),
        ({"month": "2025-01", "operation": "sum", "data": [_row()]}, "text/plain", "Content-Type"),
    ],
)
def test_the_fake_rejects_contract_violations(
    fake: FakeCloudZero, body: Any, content_type: str | None, expected: str
) -> None:
    response = httpx.post(
        f"{fake.url}/v2/connections/billing/anycost/{CONNECTION_ID}/billing_drops",
        content=json.dumps(body).encode(),
        headers={"Authorization": API_KEY, "Content-Type": content_type or "application/json"},
    )
    assert response.status_code == 400, response.text
    assert expected in response.json()["error"]["message"]
    assert fake.stored_rows() == []


@pytest.mark.parametrize("auth", [None, f"Bearer {API_KEY}", API_KEY + "x", API_KEY.lower()])
def test_the_fake_demands_the_exact_raw_key(fake: FakeCloudZero, auth: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    body = render_bodies(DAY, one_hour_items())[0]
    url = f"{fake.url}/v2/connections/billing/anycost/{CONNECTION_ID}/billing_drops"
    response = httpx.post(url, content=body, headers=headers)
    assert response.status_code == 403
    assert response.json() == {"message": "Forbidden"}
    assert httpx.get(f"{fake.url}/v2/other", headers={"Authorization": API_KEY}).status_code == 404


def test_the_fake_implements_replace_drop_sum_validate_and_idempotency(fake: FakeCloudZero) -> None:
    url = f"{fake.url}/v2/connections/billing/anycost/{CONNECTION_ID}/billing_drops"
    headers = {"Authorization": API_KEY, "Content-Type": "application/json"}

    def post(operation: str, *rows: dict[str, Any], key: str | None = None) -> httpx.Response:
        extra = {"cloudzero-idempotency-key": key} if key else {}
        payload = {"month": "2025-01", "operation": operation, "data": list(rows)}
        return httpx.post(url, content=json.dumps(payload), headers={**headers, **extra})

    h1 = "2025-01-01T01:00:00Z"
    assert post("sum", _row(**{"time/usage_start": h1})).status_code == 200
    assert post("sum", _row()).status_code == 200
    assert post("sum", _row()).status_code == 200
    assert fake.hour_costs() == {h1: Decimal("0.5"), "2025-01-31T00:00:00Z": Decimal("1.0")}
    answer = post("replace_drop", _row(**{"cost/cost": "0.25"})).json()["connection"]
    assert answer["row_count"] == 1
    assert answer["month"].startswith("2025-01")
    assert fake.hour_costs() == {"2025-01-31T00:00:00Z": Decimal("0.25")}  # the month was swapped
    # Idempotency key: the second body is ignored and the first answer replayed (§2.6).
    first = post("replace_hourly", _row(**{"cost/cost": "1"}), key="k1")
    second = post("replace_hourly", _row(**{"cost/cost": "2"}), key="k1")
    assert first.json() == second.json()
    assert fake.hour_costs() == {"2025-01-31T00:00:00Z": Decimal("1")}
    # An empty replace_hourly clears nothing (which is why the client sends a placeholder row).
    assert post("replace_hourly").status_code == 200
    assert fake.hour_costs() == {"2025-01-31T00:00:00Z": Decimal("1")}
    validate = httpx.post(
        f"{fake.url}/v2/connections/billing/anycost/validate_billing_drop",
        content=json.dumps(
            {"month": "2025-01", "operation": "sum", "data": [_row(**{"cost/cost": "1e-3"})]}
        ),
        headers=headers,
    ).json()["connection"]
    assert validate["is_valid"] is False
    assert "plain decimal" in validate["errors"][0]
    listed = httpx.get(url, headers=headers).json()["billing_drops"]
    assert [d["drop_id"] for d in listed] == fake.drop_ids
    conn = httpx.get(f"{fake.url}/v2/connections/billing/{CONNECTION_ID}", headers=headers)
    assert conn.json()["connection"]["connection_id"] == CONNECTION_ID


def test_the_fake_enforces_the_month_row_limit() -> None:
    with FakeCloudZero(API_KEY, CONNECTION_ID, max_rows_per_month=3) as fake:
        url = f"{fake.url}/v2/connections/billing/anycost/{CONNECTION_ID}/billing_drops"
        headers = {"Authorization": API_KEY, "Content-Type": "application/json"}
        payload = {"month": "2025-01", "operation": "sum", "data": [_row()] * 2}
        assert httpx.post(url, content=json.dumps(payload), headers=headers).status_code == 200
        refused = httpx.post(url, content=json.dumps(payload), headers=headers)
        assert refused.status_code == 400
        assert "limit 3" in refused.text
        assert fake.row_count("2025-01") == 2


# ---------------------------------------------------------------------------------------------
# Pure units: rendering, Retry-After, response checks (httpx.MockTransport)


def test_render_bodies_is_deterministic_valid_and_bounded() -> None:
    items = one_hour_items(rows=200)
    bodies = render_bodies(DAY, items, 6_000)
    assert bodies == render_bodies(DAY, items, 6_000)
    assert len(bodies) > 1
    assert all(len(b) <= 6_000 for b in bodies)
    parsed = [json.loads(b) for b in bodies]
    assert [list(p) for p in parsed] == [["month", "operation", "data"]] * len(bodies)
    assert [p["operation"] for p in parsed] == ["replace_hourly"] + ["sum"] * (len(bodies) - 1)
    rows = [row for p in parsed for row in p["data"]]
    expected = [{k: v for k, v in r.items() if v is not None} for r in items.to_pylist()]
    assert rows == expected
    assert b" " not in bodies[0].split(b'"data"')[0]  # compact separators
    single = render_bodies(DAY, items)
    assert len(single) == 1
    assert json.loads(single[0])["data"] == expected


def test_render_bodies_rejects_what_it_cannot_send() -> None:
    items = one_hour_items()
    with pytest.raises(BodyTooLargeError):
        render_bodies(DAY, items, 300)
    with pytest.raises(ValueError, match="other than"):
        render_bodies(DAY + timedelta(hours=1), items)
    with pytest.raises(ValueError, match="whole UTC hour"):
        render_bodies(DAY + timedelta(minutes=5), items)
    with pytest.raises(ValueError, match="strings"):
        render_bodies(DAY, items.set_column(1, "cost/cost", pa.array([1.0] * items.num_rows)))


def test_render_bodies_escapes_json_and_keeps_unicode() -> None:
    items = empty_hour_line_items(DAY).append_column(
        "resource/tag:note", pa.array(['a "quoted" \\ back\nslash\x01 ü €'])
    )
    (body,) = render_bodies(DAY, items)
    assert json.loads(body)["data"][0]["resource/tag:note"] == 'a "quoted" \\ back\nslash\x01 ü €'


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("Wed, 01 Jan 2025 00:00:30 GMT", now) == 30.0
    assert parse_retry_after("Tue, 31 Dec 2024 00:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_requests_carry_the_raw_key_and_malformed_success_fails() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    client = CloudZeroClient(
        "https://cz.invalid/", API_KEY, CONNECTION_ID, transport=httpx.MockTransport(answer)
    )
    with client, pytest.raises(CloudZeroError, match="unexpected success response"):
        client.send_hour(DAY, one_hour_items())
    (request,) = seen
    assert request.headers["Authorization"] == API_KEY
    assert request.headers["Content-Type"] == "application/json"
    assert request.url.path == f"/v2/connections/billing/anycost/{CONNECTION_ID}/billing_drops"


def test_receipt_is_json_friendly() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        rows = len(json.loads(request.content)["data"])
        return httpx.Response(
            200,
            json={
                "connection": {"drop_id": "d1", "month": "2025-01-01T00:00:00Z", "row_count": rows}
            },
        )

    client = CloudZeroClient(
        "https://cz.invalid", API_KEY, CONNECTION_ID, transport=httpx.MockTransport(answer)
    )
    with client:
        receipt = client.send_hour(DAY.replace(tzinfo=None), one_hour_items())
    assert isinstance(receipt, HourReceipt)
    meta = receipt.to_metadata()
    assert json.loads(json.dumps(meta)) == meta
    assert meta["hour"] == "2025-01-31T00:00:00+00:00"
    assert meta["drop_ids"] == ["d1"]
