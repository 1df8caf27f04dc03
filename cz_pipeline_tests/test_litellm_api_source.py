"""The REST source against a fake LiteLLM over real HTTP, and its row conversion on real rows."""

from __future__ import annotations

import json
import logging
import random
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from cz_pipeline.lib.hours import HourWindow
from cz_pipeline.lib.sources.base import SourceError, SpendLogSource
from cz_pipeline.lib.sources.litellm_api import LiteLLMApiSource, rows_to_extract
from cz_pipeline.lib.spend_log_schema import EXTRACT_SCHEMA
from cz_pipeline_tests.fakes.litellm_api import (
    FakeLiteLLM,
    moment,
    rows_at,
    sample_rows,
    spread,
)

MASTER_KEY = "sk-master-3f9a7c21e5d84b60"
WRONG_KEY = "sk-wrong-8d2b4f6a0c1e9375"
PRIVATE_FIELDS = ("messages", "response", "proxy_server_request", "requester_ip_address")
HOUR_10 = moment("2026-11-27 10:00:00")


def make_source(fake: FakeLiteLLM, key: str = MASTER_KEY, **options: Any) -> LiteLLMApiSource:
    options.setdefault("backoff_base", 0.001)
    options.setdefault("timeout", 5.0)
    return LiteLLMApiSource(fake.url, key, **options)


def read(source: LiteLLMApiSource, window: HourWindow) -> tuple[pa.Table, list[str], int]:
    """Consume an extraction: (all rows, notes, number of batches)."""
    extraction = source.extract(window)
    batches = list(extraction.batches)
    for batch in batches:
        assert batch.schema.equals(EXTRACT_SCHEMA, check_metadata=True)
    table = pa.Table.from_batches(batches, schema=EXTRACT_SCHEMA)
    return table, extraction.notes, len(batches)


def naive(text: str) -> datetime:
    return datetime.fromisoformat(text)


def assert_exactly(table: pa.Table, rows: list[dict[str, Any]]) -> None:
    """Every expected row once, nothing else, ascending by start_time."""
    ids = table.column("request_id").to_pylist()
    assert len(ids) == len(set(ids)), "a row came back twice"
    assert sorted(ids) == sorted(row["request_id"] for row in rows)
    starts = table.column("start_time").to_pylist()
    assert starts == sorted(starts)


# -- rows_to_extract --------------------------------------------------------------------------


def test_rows_to_extract_on_real_rows() -> None:
    rows = sample_rows()
    table = rows_to_extract(rows)

    assert table.schema.equals(EXTRACT_SCHEMA, check_metadata=True)
    assert table.num_rows == 22
    by_id = {row["request_id"]: row for row in table.to_pylist()}

    cached = by_id["msg_mock_cached"]
    assert cached["cache_read_tokens"] == 1000
    assert cached["cache_creation_tokens"] == 150
    assert cached["prompt_tokens"] == 1200
    assert cached["completion_tokens"] == 80
    assert cached["input_cost"] == pytest.approx(0.0010125)
    assert cached["output_cost"] == pytest.approx(0.0012)
    assert cached["cache_read_cost"] == pytest.approx(0.0003)
    assert cached["cache_creation_cost"] == pytest.approx(0.0005625)
    assert cached["key_alias"] == "batch-job-key-1795796137"
    assert cached["team_alias"] == "data-platform"
    assert cached["session_id"] == "sess-rag-1"
    assert json.loads(cached["request_tags"]) == [
        "feature:rag",
        "User-Agent: curl",
        "User-Agent: curl/7.88.1",
    ]

    embedding = by_id["f4783922-c8c3-405b-8bcc-47cbc5ee3d0e"]
    assert embedding["start_time"] == naive("2026-11-27 16:15:41.147")
    assert embedding["end_time"] == naive("2026-11-27 16:15:41.149")
    assert embedding["created_at"] is None  # v2 does not return created_at
    assert embedding["request_duration_ms"] == 2
    assert embedding["call_type"] == "aembedding"
    assert embedding["status"] == "success"
    assert embedding["cache_hit"] == "None"
    assert embedding["organization_id"] == ""
    assert embedding["litellm_call_id"] == "f4783922-c8c3-405b-8bcc-47cbc5ee3d0e"
    assert (embedding["cache_read_tokens"], embedding["cache_creation_tokens"]) == (0, 0)
    assert embedding["input_cost"] == pytest.approx(2.5e-05)
    assert embedding["cache_read_cost"] is None

    failure = by_id["e12f3cce-3c76-49e1-8a4c-47cea7631154"]
    assert failure["status"] == "failure"
    assert (failure["cache_read_tokens"], failure["cache_creation_tokens"]) == (0, 0)
    assert failure["input_cost"] is None
    assert failure["end_user"] == "end-user-42"

    master_key_call = next(r for r in by_id.values() if r["user"] == "default_user_id")
    assert master_key_call["key_alias"] is None

    metadata = [
        json.loads(r["spend_logs_metadata"]) for r in by_id.values() if r["spend_logs_metadata"]
    ]
    assert sorted(metadata, key=str) == [{"job": "nightly", "run": run} for run in range(1, 9)]

    assert table.column("spend").to_pylist() == [row["spend"] for row in rows]
    assert table.column("api_key").to_pylist() == [row["api_key"] for row in rows]


def test_rows_to_extract_keeps_no_private_data() -> None:
    table = rows_to_extract(sample_rows())

    assert not set(table.column_names) & {*PRIVATE_FIELDS, "metadata", "model_map_information"}
    text = json.dumps(table.to_pylist(), default=str)
    for leaked in ("127.0.0.1", "model_map", "supported_openai_params", "user_api_key_user_id"):
        assert leaked not in text


def test_rows_to_extract_timestamp_spellings_and_defaults() -> None:
    rows: list[dict[str, Any]] = [
        {
            "request_id": "zulu",
            "startTime": "2026-11-27T16:15:41.147Z",
            "endTime": "2026-11-27T18:15:41.150+02:00",
            "metadata": {"usage_object": {"prompt_tokens_details": {"cached_tokens": 64}}},
            "request_tags": [],
        },
        {
            "request_id": "legacy",
            "startTime": "2026-11-27T16:08:47.595999Z",
            "endTime": None,
            "metadata": None,
        },
    ]
    table = rows_to_extract(rows)
    zulu, legacy = table.to_pylist()

    assert zulu["start_time"] == naive("2026-11-27 16:15:41.147")
    assert zulu["end_time"] == naive("2026-11-27 16:15:41.150")
    assert legacy["start_time"] == naive("2026-11-27 16:08:47.595")
    assert legacy["end_time"] is None
    assert zulu["cache_read_tokens"] == 64
    assert zulu["cache_creation_tokens"] == 0
    assert (legacy["cache_read_tokens"], legacy["cache_creation_tokens"]) == (0, 0)
    assert zulu["request_tags"] == "[]"
    assert legacy["request_tags"] is None
    for column in ("status", "organization_id", "litellm_call_id", "created_at", "session_id"):
        assert zulu[column] is None
    assert zulu["request_duration_ms"] is None
    assert zulu["spend_logs_metadata"] is None


def test_rows_to_extract_reads_naive_timestamps_as_utc() -> None:
    rows = [
        {"request_id": "a", "startTime": "2026-11-27T16:15:41.147"},
        {"request_id": "b", "startTime": "2026-11-27 16:15:41.148+00:00"},
    ]
    starts = rows_to_extract(rows).column("start_time").to_pylist()
    assert starts == [naive("2026-11-27 16:15:41.147"), naive("2026-11-27 16:15:41.148")]


def test_rows_to_extract_edge_cases() -> None:
    assert rows_to_extract([]).schema.equals(EXTRACT_SCHEMA, check_metadata=True)
    assert rows_to_extract([]).num_rows == 0
    with pytest.raises(ValueError, match="start_time"):
        rows_to_extract([{"request_id": "x", "startTime": "yesterday"}])


def _with_metadata(row: dict[str, Any], metadata: Any) -> dict[str, Any]:
    return {**row, "request_id": "bad-row", "metadata": metadata}


def _with_metadata_value(row: dict[str, Any], path: tuple[str, str], value: Any) -> dict[str, Any]:
    metadata = dict(row["metadata"])
    metadata[path[0]] = {**(metadata.get(path[0]) or {}), path[1]: value}
    return _with_metadata(row, metadata)


# What each shape LiteLLM should not write does to one real row, and what row_problems says.
BAD_SHAPES: dict[str, tuple[Any, str]] = {
    "metadata array": ([1, 2], "metadata is not a JSON object but a JSON array"),
    "metadata string": ("free text", "metadata is not a JSON object but a JSON string"),
    "metadata number": (42, "metadata is not a JSON object but a JSON number"),
    "metadata null": (None, "metadata is not a JSON object but a JSON null"),
    "input cost n/a": (
        (("cost_breakdown", "input_cost"), "n/a"),
        'metadata.cost_breakdown.input_cost is not a number in range: string "n/a"',
    ),
    "cache tokens 12abc": (
        (("usage_object", "cache_read_input_tokens"), "12abc"),
        "metadata.usage_object.cache_read_input_tokens is not a whole number in range: "
        'string "12abc"',
    ),
    "cache tokens 1e20": (
        (("usage_object", "cache_creation_input_tokens"), 10**20),
        "metadata.usage_object.cache_creation_input_tokens is not a whole number in range: "
        "number 100000000000000000000",
    ),
}


@pytest.mark.parametrize("shape", BAD_SHAPES)
def test_rows_to_extract_names_a_bad_row_instead_of_failing(shape: str) -> None:
    good = sample_rows()[0]
    change, problem = BAD_SHAPES[shape]
    if shape.startswith("metadata "):
        bad = _with_metadata(good, change)
    else:
        bad = _with_metadata_value(good, *change)
    table = rows_to_extract([good, bad])
    assert table.column("row_problems").to_pylist() == [None, problem]
    assert table.column("spend").to_pylist() == [good["spend"], good["spend"]]


def test_rows_to_extract_reads_numeric_text_and_keeps_numbers_exact() -> None:
    row = sample_rows()[0]
    field = ("usage_object", "cache_read_input_tokens")
    texts = rows_to_extract([_with_metadata_value(row, field, " 12 ")])
    assert texts.column("row_problems").to_pylist() == [None]
    assert texts.column("cache_read_tokens").to_pylist() == [12]
    large = rows_to_extract([_with_metadata_value(row, field, 10**17 + 1)])
    assert large.column("row_problems").to_pylist() == [None]
    assert large.column("cache_read_tokens").to_pylist() == [10**17 + 1]


# -- the source over HTTP ---------------------------------------------------------------------


def test_multi_hour_window_returns_each_row_once_in_its_hour() -> None:
    inside = [
        "10:00:00.000",
        "10:00:00.001",
        "10:30:00.000",
        "10:59:59.000",
        "10:59:59.500",
        "10:59:59.999",
        "11:00:00.000",
        "11:59:59.999",
    ]
    outside = ["09:00:00.000", "09:59:59.999", "12:00:00.000", "12:00:00.001"]
    wanted = rows_at([moment(f"2026-11-27 {t}") for t in inside], prefix="in")
    foreign = rows_at([moment(f"2026-11-27 {t}") for t in outside], prefix="out")
    served = wanted + foreign
    random.Random(7).shuffle(served)

    with FakeLiteLLM(served, MASTER_KEY) as fake:
        source = make_source(fake)
        table, notes, _ = read(source, HourWindow(HOUR_10, moment("2026-11-27 12:00:00")))
        assert_exactly(table, wanted)
        assert table.column("start_time").to_pylist() == [naive(f"2026-11-27 {t}") for t in inside]

        windows = {(r.start_date, r.end_date) for r in fake.requests}
        assert windows == {
            ("2026-11-27 10:00:00", "2026-11-27 11:00:00"),
            ("2026-11-27 11:00:00", "2026-11-27 12:00:00"),
        }
        for request in fake.requests:
            assert request.authorized
            assert request.params["sort_order"] == "asc"
            assert request.params["sort_by"] == "startTime"
            assert request.params["page_size"] == "1000"
        assert notes[0].startswith(f"read 8 rows in 4 pages from {fake.url}")

        # One hour alone: its own rows, not the 11:00:00.000 row the inclusive bound returns.
        table, _, _ = read(source, HourWindow.for_hour(HOUR_10))
        assert_exactly(table, wanted[:6])


def test_paging_across_many_pages() -> None:
    rows = rows_at(spread(HOUR_10, 250, timedelta(hours=1)))
    with FakeLiteLLM(rows, MASTER_KEY) as fake:
        table, notes, batches = read(make_source(fake, page_size=20), HourWindow.for_hour(HOUR_10))

        assert_exactly(table, rows)
        assert [int(r.params["page"]) for r in fake.requests] == list(range(1, 15))
        assert batches == 13
        assert (
            notes[0]
            == f"read 250 rows in 14 pages from {fake.url}, windows split for the 10,000 cap: 0"
        )


def test_window_over_the_count_cap_is_split_and_loses_nothing() -> None:
    rows = rows_at(spread(HOUR_10, 200, timedelta(hours=1)))
    with FakeLiteLLM(rows, MASTER_KEY, count_cap=50) as fake:
        table, notes, _ = read(make_source(fake), HourWindow.for_hour(HOUR_10))

        assert_exactly(table, rows)
        spans = [
            naive(r.end_date) - naive(r.start_date)
            for r in fake.requests
            if r.params["page"] == "1"
        ]
        assert spans[0] == timedelta(hours=1)
        assert min(spans) <= timedelta(minutes=15)
        assert "windows split for the 10,000 cap: 0" not in notes[0]


def test_minute_over_the_cap_is_paged_to_the_end() -> None:
    busy_minute = spread(moment("2026-11-27 10:17:00"), 120, timedelta(minutes=1))
    rows = rows_at([*busy_minute, moment("2026-11-27 10:45:00")])
    with FakeLiteLLM(rows, MASTER_KEY, count_cap=50) as fake:
        table, _, _ = read(make_source(fake, page_size=40), HourWindow.for_hour(HOUR_10))

        assert_exactly(table, rows)
        narrowest = min(naive(r.end_date) - naive(r.start_date) for r in fake.requests)
        assert narrowest >= timedelta(minutes=1)


def test_server_errors_are_retried_until_they_pass() -> None:
    rows = rows_at(spread(HOUR_10, 30, timedelta(hours=1)))
    with FakeLiteLLM(rows, MASTER_KEY) as fake:
        fake.fail_next(status=500, times=2)
        table, notes, _ = read(make_source(fake), HourWindow.for_hour(HOUR_10))

        assert_exactly(table, rows)
        assert [r.status for r in fake.requests] == [500, 500, 200, 200]
        assert "retried 2 requests after timeouts or server errors" in notes


def test_timeout_is_retried() -> None:
    rows = rows_at(spread(HOUR_10, 30, timedelta(hours=1)))
    with FakeLiteLLM(rows, MASTER_KEY) as fake:
        fake.delay_next(seconds=1.0)
        table, notes, _ = read(make_source(fake, timeout=0.2), HourWindow.for_hour(HOUR_10))

        assert_exactly(table, rows)
        assert "retried 1 requests after timeouts or server errors" in notes


def test_dropped_connection_is_retried() -> None:
    rows = rows_at(spread(HOUR_10, 10, timedelta(hours=1)))
    with FakeLiteLLM(rows, MASTER_KEY) as fake:
        fake.disconnect_next()
        table, _, _ = read(make_source(fake), HourWindow.for_hour(HOUR_10))

        assert_exactly(table, rows)


def test_gives_up_after_max_attempts() -> None:
    with FakeLiteLLM(rows_at([HOUR_10]), MASTER_KEY) as fake:
        fake.fail_next(status=503, times=10, detail="upstream database is down")
        source = make_source(fake, max_attempts=3)
        with pytest.raises(
            SourceError, match="failed GET /spend/logs/v2: gave up after 3 attempts"
        ) as failure:
            read(source, HourWindow.for_hour(HOUR_10))

        assert "HTTP 503: upstream database is down" in str(failure.value)
        assert len(fake.requests) == 3


def test_wrong_master_key_fails_at_once_without_leaking_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with FakeLiteLLM(rows_at([HOUR_10]), MASTER_KEY) as fake:
        source = make_source(fake, key=WRONG_KEY)
        with pytest.raises(SourceError) as failure:
            read(source, HourWindow.for_hour(HOUR_10))

        message = str(failure.value)
        assert message.startswith(
            f"LiteLLM API at {fake.url} refused the master key (HTTP 401): Authentication Error"
        )
        assert len(fake.requests) == 1
    for secret in (WRONG_KEY, MASTER_KEY, WRONG_KEY[3:], WRONG_KEY[-8:]):
        assert secret not in message
        assert secret not in caplog.text
        assert secret not in repr(source)


def test_other_client_errors_fail_with_status_and_detail() -> None:
    with FakeLiteLLM(rows_at([HOUR_10]), MASTER_KEY) as fake:
        source = LiteLLMApiSource(fake.url + "/not-litellm", MASTER_KEY, backoff_base=0.001)
        with pytest.raises(
            SourceError, match=r"rejected GET /spend/logs/v2 \(HTTP 404\): Not Found"
        ):
            read(source, HourWindow.for_hour(HOUR_10))

        assert len(fake.requests) == 1


def test_rows_landing_while_paging_are_picked_up_by_a_reread() -> None:
    rows = rows_at(spread(HOUR_10, 60, timedelta(hours=1)))
    late = rows_at([moment("2026-11-27 10:00:05")], prefix="late")
    with FakeLiteLLM(rows, MASTER_KEY) as fake:
        fake.insert_after(1, late)  # lands before the offset of page 2: shifts every page
        table, notes, _ = read(make_source(fake, page_size=20), HourWindow.for_hour(HOUR_10))

        assert_exactly(table, rows + late)
        assert any("re-read 1 windows" in note for note in notes)


def test_rows_still_moving_after_a_reread_fail_loudly() -> None:
    rows = rows_at(spread(HOUR_10, 60, timedelta(hours=1)))
    with FakeLiteLLM(rows, MASTER_KEY) as fake:
        fake.insert_after(1, rows_at([moment("2026-11-27 10:00:05")], prefix="late-a"))
        fake.insert_after(6, rows_at([moment("2026-11-27 10:00:06")], prefix="late-b"))
        with pytest.raises(SourceError, match="Re-run the hour later"):
            read(make_source(fake, page_size=20), HourWindow.for_hour(HOUR_10))


def test_the_source_fits_the_protocol_and_checks_its_settings() -> None:
    source: SpendLogSource = LiteLLMApiSource("http://litellm:4000/", MASTER_KEY)
    assert source.name == "api"
    assert MASTER_KEY not in repr(source)
    for page_size in (0, 1001):
        with pytest.raises(ValueError, match="page_size"):
            LiteLLMApiSource("http://litellm:4000", MASTER_KEY, page_size=page_size)
