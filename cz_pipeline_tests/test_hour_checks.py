"""The hourly checks in real runs: a bad hour is held back, the others reach CloudZero."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cz_pipeline.lib.hours import HOUR, HourWindow, floor_hour, partition_key
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.sources.base import Extraction, SpendLogSource
from cz_pipeline.lib.sources.litellm_postgres import LiteLLMPostgresSource
from cz_pipeline.lib.synthetic import write_to_postgres
from cz_pipeline_tests.pipeline_runs import (
    check_evaluations,
    execute,
    failed_checks,
    failed_hours,
    hour_metadata,
    hour_verdicts,
    rule_verdicts,
    run_job,
)

# The synthetic traffic prices a few models at 0 on purpose; only the unpriced test lowers this.
CLEAN = 0.5
# Recent hours, so the late-row check's lookback (72 hours before now) covers them.
DAY = floor_hour(datetime.now(UTC)).replace(hour=0) - timedelta(days=1)
HOURS = [DAY + i * HOUR for i in range(24)]
BAD = HOURS[7]
FIRST, LAST = partition_key(HOURS[0]), partition_key(HOURS[-1])
HOUR_CHECKS = {
    "required_fields",
    "start_time_in_hour",
    "request_id_unique",
    "spend_and_tokens_valid",
    "matches_source",
}


@pytest.fixture
def litellm_day(fresh_database: str) -> str:
    write_to_postgres(fresh_database, HourWindow(HOURS[0], HOURS[-1] + HOUR), 8, seed=3)
    return fresh_database


def litellm_writes_daily_table_too(url: str) -> None:
    """LiteLLM updates its daily table from the same requests: rebuild it from the spend logs."""
    execute(url, 'DELETE FROM "LiteLLM_DailyUserSpend"')
    execute(
        url,
        """INSERT INTO "LiteLLM_DailyUserSpend" (id, user_id, date, api_key, model,
        custom_llm_provider, spend, api_requests, successful_requests, failed_requests, updated_at)
        SELECT md5(random()::text), "user", to_char("startTime", 'YYYY-MM-DD'), api_key, model,
        custom_llm_provider, sum(spend), count(*), count(*) FILTER (WHERE status = 'success'),
        count(*) FILTER (WHERE status = 'failure'), now()
        FROM "LiteLLM_SpendLogs" GROUP BY 2, 3, 4, 5, 6""",
    )


def run_day(
    url: str, lake: Path, unpriced_share_threshold: float = CLEAN
) -> dg.ExecuteInProcessResult:
    """The whole job over the test day, on a fresh Dagster instance."""
    with dg.instance_for_test() as instance:
        return run_job(
            instance,
            lake,
            FIRST,
            LAST,
            database_url=url,
            unpriced_share_threshold=unpriced_share_threshold,
        )


def one_row_of(url: str, hour: datetime, *, last: bool = False) -> str:
    from cz_pipeline_tests.pipeline_runs import fetch_one

    (request_id,) = fetch_one(
        url,
        'SELECT request_id FROM "LiteLLM_SpendLogs" WHERE "startTime" >= '
        f"'{hour:%Y-%m-%d %H:%M:%S}' AND \"startTime\" < '{hour + HOUR:%Y-%m-%d %H:%M:%S}' "
        "AND status = 'success' AND spend > 0 "
        f'ORDER BY "startTime" {"DESC" if last else "ASC"} LIMIT 1',
    )
    return str(request_id)


def assert_only_bad_hour_held(lake_dir: Path, result: dg.ExecuteInProcessResult) -> None:
    line_items = hour_metadata(result, "cloudzero_line_items")
    drops = hour_metadata(result, "cloudzero_billing_drops")
    assert len(drops) == 24
    for hour in HOURS:
        key = partition_key(hour)
        assert line_items[key]["held_back"] is (hour == BAD), key
        # A dry run writes to the outbox: never "delivered".
        assert drops[key]["state"] == ("held_back" if hour == BAD else "dry_run"), key
    outbox = Lake(str(lake_dir)).hour_folder("cloudzero_outbox", BAD)
    assert not Path(outbox).exists()


def test_clean_day_passes_every_check_and_delivers_every_hour(
    litellm_day: str, tmp_path: Path
) -> None:
    result = run_day(litellm_day, tmp_path)
    assert result.success
    assert {"every_hour_delivered", "hour_checks"} <= set(check_evaluations(result))
    assert failed_checks(result) == set()
    keys = [partition_key(h) for h in HOURS]
    rules = {
        "litellm_spend_logs": HOUR_CHECKS | {"values_readable", "unpriced_traffic"},
        "cloudzero_line_items": {"cbf_contract", "cost_conserved", "tags_constant_per_resource"},
    }
    for asset, names in rules.items():
        verdicts = hour_verdicts(result, asset)
        assert sorted(verdicts) == keys, asset  # one verdict per hour, on the hour's partition
        for verdict in verdicts.values():
            assert verdict.passed
            judged = rule_verdicts(verdict)
            assert {name: judged[name] for name in names} == dict.fromkeys(names, "passed")
    matches = hour_verdicts(result, "litellm_spend_logs")[keys[3]]
    assert "as LiteLLM does (spend within 0.000000001 USD)" in matches.metadata["rules"].value
    assert not [label for label in matches.metadata if label.startswith("matches_source.")]


def test_negative_spend_holds_back_only_its_hour_and_fails_the_run(
    litellm_day: str, tmp_path: Path
) -> None:
    bad_id = one_row_of(litellm_day, BAD)
    execute(
        litellm_day, 'UPDATE "LiteLLM_SpendLogs" SET spend = -0.5 WHERE request_id = %s', (bad_id,)
    )
    litellm_writes_daily_table_too(litellm_day)
    result = run_day(litellm_day, tmp_path)
    assert not result.success
    assert failed_checks(result) == {"spend_and_tokens_valid", "every_hour_delivered"}
    assert failed_hours(result, "litellm_spend_logs", "spend_and_tokens_valid") == [
        partition_key(BAD)
    ]
    spend_check = hour_verdicts(result, "litellm_spend_logs")[partition_key(BAD)]
    assert spend_check.severity == dg.AssetCheckSeverity.ERROR
    assert spend_check.metadata["offending_request_ids"].value == [bad_id]
    assert spend_check.description.startswith("spend_and_tokens_valid: ")
    assert "1 row with negative spend" in spend_check.description
    # The held-back hour's line items were never built, so their checks did not judge it.
    line_item_verdicts = hour_verdicts(result, "cloudzero_line_items")
    assert sorted(line_item_verdicts) == [partition_key(h) for h in HOURS if h != BAD]
    gate = check_evaluations(result)["every_hour_delivered"]
    assert gate.metadata["failed_hours"].value == partition_key(BAD)
    assert gate.metadata["offending_request_ids"].value == [bad_id]
    assert "spend_and_tokens_valid" in gate.description
    assert partition_key(BAD) in gate.metadata["failures"].value or f"{BAD:%H:%M}" in str(
        gate.metadata["failures"].value
    )
    assert_only_bad_hour_held(tmp_path, result)
    quarantined = Lake(str(tmp_path)).hour_folder("litellm_spend_logs_quarantine", BAD)
    assert Path(quarantined).exists()


def test_duplicate_request_id_is_reported_not_dropped(litellm_day: str, tmp_path: Path) -> None:
    # Partitioned LiteLLM installs key spend logs on (request_id, "startTime").
    execute(litellm_day, 'ALTER TABLE "LiteLLM_SpendLogs" DROP CONSTRAINT "LiteLLM_SpendLogs_pkey"')
    duplicate = one_row_of(litellm_day, BAD)
    execute(
        litellm_day,
        'INSERT INTO "LiteLLM_SpendLogs" SELECT * FROM "LiteLLM_SpendLogs" WHERE request_id = %s',
        (duplicate,),
    )
    execute(
        litellm_day,
        """UPDATE "LiteLLM_SpendLogs" SET "startTime" = "startTime" + interval '1 millisecond'
        WHERE ctid = (SELECT max(ctid) FROM "LiteLLM_SpendLogs" WHERE request_id = %s)""",
        (duplicate,),
    )
    litellm_writes_daily_table_too(litellm_day)
    result = run_day(litellm_day, tmp_path)
    assert failed_checks(result) == {"request_id_unique", "every_hour_delivered"}
    assert failed_hours(result, "litellm_spend_logs", "request_id_unique") == [partition_key(BAD)]
    check = hour_verdicts(result, "litellm_spend_logs")[partition_key(BAD)]
    assert check.metadata["offending_request_ids"].value == [duplicate]
    table = Lake(str(tmp_path)).read_hour(
        "litellm_spend_logs_quarantine", BAD, dataset_file="litellm_spend_logs"
    )
    assert pc.sum(pc.equal(table["request_id"], duplicate)).as_py() == 2
    assert_only_bad_hour_held(tmp_path, result)


class ShiftingSource(dg.ConfigurableResource):
    """The Postgres source with one row moved outside its hour: a source bug to catch."""

    database_url: str
    request_id: str

    def build(self) -> SpendLogSource:
        inner = LiteLLMPostgresSource(self.database_url)
        request_id = self.request_id

        class Shifted:
            name = "postgres"

            def extract(self, window: HourWindow) -> Extraction:
                extraction = inner.extract(window)
                original = extraction.batches

                def batches() -> Iterator[pa.RecordBatch]:
                    for batch in original:
                        hit = pc.equal(batch["request_id"], request_id)
                        moved = pc.if_else(
                            hit,
                            pc.subtract(
                                batch["start_time"],
                                pa.scalar(timedelta(hours=2), pa.duration("ms")),
                            ).cast(batch.schema.field("start_time").type),
                            batch["start_time"],
                        )
                        yield batch.set_column(
                            batch.schema.get_field_index("start_time"),
                            batch.schema.field("start_time"),
                            moved,
                        )

                extraction.batches = batches()
                return extraction

        return Shifted()


def test_a_row_outside_its_hour_is_caught(litellm_day: str, tmp_path: Path) -> None:
    # The hour's last row, so it arrives among its hour's rows.
    stray = one_row_of(litellm_day, BAD, last=True)
    source = ShiftingSource(database_url=litellm_day, request_id=stray)
    with dg.instance_for_test() as instance:
        result = run_job(
            instance, tmp_path, FIRST, LAST, source=source, unpriced_share_threshold=CLEAN
        )
    assert not result.success
    # The row arrives among its hour's rows but says it started two hours earlier.
    assert failed_checks(result) == {"start_time_in_hour", "every_hour_delivered"}
    assert failed_hours(result, "litellm_spend_logs", "start_time_in_hour") == [partition_key(BAD)]
    check = hour_verdicts(result, "litellm_spend_logs")[partition_key(BAD)]
    assert check.metadata["offending_request_ids"].value == [stray]
    assert_only_bad_hour_held(tmp_path, result)


def test_unpriced_traffic_warns_without_holding_the_hour(litellm_day: str, tmp_path: Path) -> None:
    # Price the traffic the generator leaves unpriced, then make one hour unpriced.
    execute(
        litellm_day,
        """UPDATE "LiteLLM_SpendLogs" SET spend = 0.001 WHERE spend = 0 AND status = 'success'
        AND total_tokens > 0 AND cache_hit <> 'True'""",
    )
    execute(
        litellm_day,
        """UPDATE "LiteLLM_SpendLogs" SET spend = 0 WHERE "startTime" >= %s AND "startTime" < %s
        AND status = 'success' AND total_tokens > 0""",
        (BAD.replace(tzinfo=None), (BAD + HOUR).replace(tzinfo=None)),
    )
    litellm_writes_daily_table_too(litellm_day)
    result = run_day(litellm_day, tmp_path, unpriced_share_threshold=0.01)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert failed_checks(result) == {"unpriced_traffic"}
    assert failed_hours(result, "litellm_spend_logs", "unpriced_traffic") == [partition_key(BAD)]
    check = hour_verdicts(result, "litellm_spend_logs")[partition_key(BAD)]
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert len(check.metadata["offending_request_ids"].value) > 0


def test_a_row_added_after_extraction_is_reported_as_late(litellm_day: str, tmp_path: Path) -> None:
    with dg.instance_for_test() as instance:
        first = run_job(
            instance,
            tmp_path,
            FIRST,
            LAST,
            database_url=litellm_day,
            unpriced_share_threshold=CLEAN,
        )
        assert first.success
        late_id = one_row_of(litellm_day, BAD)
        execute(
            litellm_day,
            """INSERT INTO "LiteLLM_SpendLogs" SELECT 'late-' || request_id, call_type, api_key,
            spend, total_tokens, prompt_tokens, completion_tokens, "startTime", "endTime",
            "completionStartTime", model, model_id, model_group, custom_llm_provider, api_base,
            "user", metadata, cache_hit, cache_key, request_tags, team_id, end_user,
            requester_ip_address, messages, response, proxy_server_request, session_id, status,
            mcp_namespaced_tool_name, organization_id, agent_id, request_duration_ms, created_at,
            updated_at, litellm_call_id, billing_agent_id
            FROM "LiteLLM_SpendLogs" WHERE request_id = %s""",
            (late_id,),
        )
        other = HOURS[20]
        second = run_job(
            instance,
            tmp_path,
            partition_key(other),
            partition_key(other),
            database_url=litellm_day,
            unpriced_share_threshold=CLEAN,
        )
    assert second.success
    assert failed_checks(second) == {"late_rows"}
    check = check_evaluations(second)["late_rows"]
    assert check.metadata["hours_to_rerun"].value == partition_key(BAD)
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.partition is None  # judges the look-back, not the run's hour
    assert "hours_judged" not in check.metadata  # only the lib's figures: hours_checked etc.
    assert check.metadata["hours_checked"].value >= 24


def test_daily_reconciliation_catches_a_row_litellm_dropped(
    litellm_day: str, tmp_path: Path
) -> None:
    dropped = one_row_of(litellm_day, BAD)
    # LiteLLM drops a spend-log row whose provider id repeats but still counts it daily.
    execute(litellm_day, 'DELETE FROM "LiteLLM_SpendLogs" WHERE request_id = %s', (dropped,))
    result = run_day(litellm_day, tmp_path)
    assert result.success
    assert failed_checks(result) == {"daily_reconciliation"}
    check = check_evaluations(result)["daily_reconciliation"]
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert "differences" in check.metadata
    assert check.metadata["days_judged"].value == 1
    assert check.metadata["failed_days"].value == f"{DAY:%Y-%m-%d}"
