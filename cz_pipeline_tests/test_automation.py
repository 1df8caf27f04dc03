"""The nightly schedule and the sync sensor."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from cz_pipeline.definitions import defs
from cz_pipeline.defs.automation import cloudzero_sync_sensor, daily_litellm_to_cloudzero
from cz_pipeline.defs.litellm.assets import litellm_spend_logs
from cz_pipeline.defs.resources import (
    CheckThresholdsResource,
    CloudZeroResource,
    LakeResource,
    SpendLogSourceResource,
)
from cz_pipeline.lib.hours import HOUR, HourWindow, floor_hour, partition_key
from cz_pipeline.lib.sync import blocks
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


def test_blocks_group_consecutive_hours() -> None:
    hours = [HOURS[3], HOURS[0], HOURS[1], HOURS[5]]
    assert blocks(hours) == [(HOURS[0], HOURS[1]), (HOURS[3], HOURS[3]), (HOURS[5], HOURS[5])]


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


def evaluate(
    database_url: str, lake: Path, cloudzero: CloudZeroResource | None = None
) -> dg.SensorResult | dg.SkipReason:
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(
            instance=instance,
            resources={
                "spend_log_source": SpendLogSourceResource(
                    kind="postgres", database_url=database_url
                ),
                "lake": LakeResource(url=str(lake)),
                "cloudzero": cloudzero or CloudZeroResource(),
                "check_thresholds": CheckThresholdsResource(),
            },
        ) as context,
    ):
        result = cloudzero_sync_sensor(context)
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


def requested_ranges(result: dg.SensorResult | dg.SkipReason) -> list[tuple[str, str]]:
    assert isinstance(result, dg.SensorResult), result
    return [
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in result.run_requests or []
    ]


def test_the_sensor_skips_when_nothing_changed(materialized: str, tmp_path: Path) -> None:
    result = evaluate(materialized, tmp_path)
    assert isinstance(result, dg.SkipReason)
    assert "CloudZero agrees with LiteLLM" in str(result.skip_message)


def test_the_sensor_reruns_every_block_of_changed_hours(materialized: str, tmp_path: Path) -> None:
    add_late_row(materialized, HOURS[1])
    add_late_row(materialized, HOURS[2])
    add_late_row(materialized, HOURS[4])
    result = evaluate(materialized, tmp_path)
    assert requested_ranges(result) == [
        (partition_key(HOURS[1]), partition_key(HOURS[2])),
        (partition_key(HOURS[4]), partition_key(HOURS[4])),
    ]
    # The same state asks for the same runs: a tick never launches one twice.
    again = evaluate(materialized, tmp_path)
    assert isinstance(again, dg.SensorResult)
    assert isinstance(result, dg.SensorResult)
    assert [r.run_key for r in again.run_requests or []] == [
        r.run_key for r in result.run_requests or []
    ]
    # After the first block's run, only the other block is left.
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
    assert requested_ranges(following) == [(partition_key(HOURS[4]), partition_key(HOURS[4]))]


def test_the_sensor_finds_late_rows_materialized_without_being_sent(
    materialized: str, tmp_path: Path
) -> None:
    """The spend-log lake matches LiteLLM, but CloudZero (here the outbox) was not sent them."""
    add_late_row(materialized, HOURS[3])
    with dg.instance_for_test() as instance:
        spend_logs_only = dg.materialize(
            [litellm_spend_logs],
            partition_key=partition_key(HOURS[3]),
            instance=instance,
            resources={
                "spend_log_source": SpendLogSourceResource(
                    kind="postgres", database_url=materialized
                ),
                "lake": LakeResource(url=str(tmp_path)),
                "check_thresholds": CheckThresholdsResource(unpriced_share_threshold=1.0),
            },
        )
    assert spend_logs_only.success
    result = evaluate(materialized, tmp_path)
    assert requested_ranges(result) == [(partition_key(HOURS[3]), partition_key(HOURS[3]))]


def test_a_real_upload_does_not_count_outbox_writes_as_sent(
    materialized: str, tmp_path: Path
) -> None:
    """The fixture ran dry: with CloudZero configured, every hour with spend is still to send."""
    real = CloudZeroResource(api_key="k", connection_id="c")
    result = evaluate(materialized, tmp_path, real)
    assert requested_ranges(result) == [(partition_key(HOURS[0]), partition_key(HOURS[-1]))]
