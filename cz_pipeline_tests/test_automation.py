"""The nightly schedule and the late-rows sensor."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from cz_pipeline.definitions import defs
from cz_pipeline.defs.automation import daily_litellm_to_cloudzero, first_block, late_rows_sensor
from cz_pipeline.defs.resources import (
    CheckThresholdsResource,
    LakeResource,
    SpendLogSourceResource,
)
from cz_pipeline.lib.hours import HOUR, HourWindow, floor_hour, partition_key
from cz_pipeline.lib.synthetic import write_to_postgres
from cz_pipeline_tests.pipeline_runs import execute, fetch_one, run_job

START = floor_hour(datetime.now(UTC)) - 10 * HOUR
HOURS = [START + i * HOUR for i in range(6)]


def test_the_schedule_asks_for_yesterday_as_one_run() -> None:
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
    )
    request = daily_litellm_to_cloudzero(context)
    assert isinstance(request, dg.RunRequest)
    assert request.tags == {
        "dagster/asset_partition_range_start": "2026-10-31-00:00",
        "dagster/asset_partition_range_end": "2026-10-31-23:00",
    }
    assert request.run_key == "daily:2026-10-31-00:00...2026-10-31-23:00"


def test_the_schedule_runs_by_default_in_utc() -> None:
    schedule = defs().resolve_schedule_def("daily_litellm_to_cloudzero")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.execution_timezone == "UTC"
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.job_name == "litellm_to_cloudzero"


def test_first_block_takes_consecutive_hours_only() -> None:
    hours = [HOURS[0], HOURS[1], HOURS[3]]
    assert first_block(hours) == (HOURS[0], HOURS[1])


@pytest.fixture
def materialized(fresh_database: str, tmp_path: Path) -> str:
    write_to_postgres(fresh_database, HourWindow(HOURS[0], HOURS[-1] + HOUR), 6, seed=5)
    with dg.instance_for_test() as instance:
        result = run_job(
            instance,
            tmp_path,
            partition_key(HOURS[0]),
            partition_key(HOURS[-1]),
            database_url=fresh_database,
            unpriced_share_threshold=1.0,
        )
    assert result.success
    return fresh_database


def evaluate(database_url: str, lake: Path) -> dg.SensorResult | dg.SkipReason:
    with dg.build_sensor_context(
        resources={
            "spend_log_source": SpendLogSourceResource(kind="postgres", database_url=database_url),
            "lake": LakeResource(url=str(lake)),
            "check_thresholds": CheckThresholdsResource(),
        }
    ) as context:
        result = late_rows_sensor(context)
    assert isinstance(result, dg.SensorResult | dg.SkipReason)
    return result


def add_late_row(url: str, hour: datetime) -> None:
    (request_id,) = fetch_one(
        url,
        'SELECT request_id FROM "LiteLLM_SpendLogs" WHERE "startTime" >= '
        f"'{hour:%Y-%m-%d %H:%M:%S}' ORDER BY \"startTime\" LIMIT 1",
    )
    execute(
        url,
        """INSERT INTO "LiteLLM_SpendLogs" (request_id, call_type, api_key, spend, total_tokens,
        prompt_tokens, completion_tokens, "startTime", "endTime", model, metadata, request_tags)
        SELECT 'late-' || request_id, call_type, api_key, 0.25, total_tokens, prompt_tokens,
        completion_tokens, "startTime" + interval '1 second', "endTime", model, metadata,
        request_tags FROM "LiteLLM_SpendLogs" WHERE request_id = %s""",
        (request_id,),
    )


def test_the_sensor_skips_when_nothing_changed(materialized: str, tmp_path: Path) -> None:
    result = evaluate(materialized, tmp_path)
    assert isinstance(result, dg.SkipReason)
    assert "none of the" in str(result.skip_message)


def test_the_sensor_reruns_only_the_hours_that_changed(materialized: str, tmp_path: Path) -> None:
    add_late_row(materialized, HOURS[1])
    add_late_row(materialized, HOURS[2])
    add_late_row(materialized, HOURS[4])
    result = evaluate(materialized, tmp_path)
    assert isinstance(result, dg.SensorResult)
    [request] = result.run_requests or []
    assert request.tags == {
        "dagster/asset_partition_range_start": partition_key(HOURS[1]),
        "dagster/asset_partition_range_end": partition_key(HOURS[2]),
    }
    # The same change asks for the same run: a tick never launches it twice.
    again = evaluate(materialized, tmp_path)
    assert isinstance(again, dg.SensorResult)
    assert (again.run_requests or [])[0].run_key == request.run_key
    # After that run, the next tick moves on to the next changed block.
    with dg.instance_for_test() as instance:
        rerun = run_job(
            instance,
            tmp_path,
            partition_key(HOURS[1]),
            partition_key(HOURS[2]),
            database_url=materialized,
            unpriced_share_threshold=1.0,
        )
    assert rerun.success
    following = evaluate(materialized, tmp_path)
    assert isinstance(following, dg.SensorResult)
    assert (following.run_requests or [])[0].tags["dagster/asset_partition_range_start"] == (
        partition_key(HOURS[4])
    )
