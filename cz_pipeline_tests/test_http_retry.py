"""The one retry rule both HTTP clients follow, and the body limit a 413 teaches for the run."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from cz_pipeline.lib.cloudzero import CloudZeroClient
from cz_pipeline.lib.hours import HourWindow
from cz_pipeline.lib.http_retry import RetryPolicy, is_transient_status, parse_retry_after
from cz_pipeline.lib.sources.litellm_api import LiteLLMApiSource
from cz_pipeline_tests.test_cloudzero_client import (
    API_KEY,
    CONNECTION_ID,
    DAY,
    Sleeps,
    one_hour_items,
)

MASTER_KEY = "sk-master-3f9a7c21e5d84b60"


def test_which_statuses_retry() -> None:
    assert {s for s in range(400, 600) if is_transient_status(s)} == {408, 409, 425, 429} | set(
        range(500, 600)
    )


def test_retry_after_is_seconds_or_an_http_date() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("Wed, 01 Jan 2025 00:00:30 GMT", now) == 30.0
    assert parse_retry_after("soon", now) is None


def test_backoff_grows_with_jitter_up_to_the_cap_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_attempts=10, backoff_base=1.0, backoff_cap=8.0, rng=random.Random(3))
    for failures, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        waits = [policy.delay(failures) for _ in range(50)]
        assert all(0.0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling / 2  # jitter spreads over the whole range
    assert policy.delay(1, retry_after=20.0) == 20.0


def test_giving_up_after_the_attempts_or_a_too_long_retry_after() -> None:
    policy = RetryPolicy(max_attempts=3, max_retry_after=60.0)
    assert policy.why_give_up(2, None) is None
    assert policy.why_give_up(3, None) == "gave up after 3 attempts"
    assert "more than max_retry_after=60 s" in str(policy.why_give_up(1, 61.0))
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(max_attempts=0)


def _page(rows: int = 0) -> httpx.Response:
    return httpx.Response(200, json={"data": [], "total": rows})


def test_both_clients_wait_what_retry_after_asks() -> None:
    """429 with Retry-After: CloudZero and LiteLLM clients wait the same way."""
    answers = iter([httpx.Response(429, headers={"Retry-After": "9"}), _page()])
    source_sleeps = Sleeps()
    source = LiteLLMApiSource(
        "https://litellm.invalid",
        MASTER_KEY,
        transport=httpx.MockTransport(lambda request: next(answers)),
        backoff_base=0.001,
        sleep=source_sleeps,
    )
    hour = datetime(2025, 1, 31, 10, tzinfo=UTC)
    list(source.extract(HourWindow(hour, hour + timedelta(hours=1))).batches)
    assert source_sleeps == [9.0]

    drop = {"connection": {"drop_id": "d-1", "row_count": 1, "month": "2025-01"}}
    too_many = httpx.Response(429, headers={"Retry-After": "9"})
    drops = iter([too_many, httpx.Response(200, json=drop)])
    client_sleeps = Sleeps()
    client = CloudZeroClient(
        "https://cz.invalid",
        API_KEY,
        CONNECTION_ID,
        transport=httpx.MockTransport(lambda request: next(drops)),
        backoff_base=0.001,
        sleep=client_sleeps,
    )
    with client:
        client.send_hour(DAY, one_hour_items(rows=1))
    assert client_sleeps == [9.0]


def test_the_body_limit_a_413_taught_is_kept_for_later_hours() -> None:
    """After one hour learnt that CloudZero takes at most ~6 kB, later hours start there."""
    sizes: list[int] = []

    def cloudzero(request: httpx.Request) -> httpx.Response:
        sizes.append(len(request.content))
        if len(request.content) > 6_000:
            return httpx.Response(413, json={"message": "Request Entity Too Large"})
        month = json.loads(request.content)["month"]
        return httpx.Response(200, json={"connection": {"drop_id": "d", "month": month}})

    client = CloudZeroClient(
        "https://cz.invalid",
        API_KEY,
        CONNECTION_ID,
        max_body_bytes=20_000,
        transport=httpx.MockTransport(cloudzero),
    )
    with client:
        first = client.send_hour(DAY, one_hour_items(DAY, rows=120))
        refused_first = sum(size > 6_000 for size in sizes)
        sizes.clear()
        second_hour = DAY + timedelta(hours=1)
        second = client.send_hour(second_hour, one_hour_items(second_hour, rows=120))
    assert refused_first == 2
    assert first.max_body_bytes == 5_000
    assert all(size <= 5_000 for size in sizes)  # no 413 for the second hour
    assert second.max_body_bytes == 5_000
    assert client.max_body_bytes == 5_000
