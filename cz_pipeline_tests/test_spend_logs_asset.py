"""The spend-log asset run by Dagster: ranges, metadata, privacy, and failures."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest

from cz_pipeline.definitions import defs
from cz_pipeline.defs.resources import LakeResource, SpendLogSourceResource
from cz_pipeline.lib.hours import parse_partition_key
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.litellm_tables import create_litellm_tables
from cz_pipeline_tests.litellm_samples import insert_sample_rows

SAMPLES = Path(__file__).parent / "data" / "litellm_spend_logs_rows.json"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
MARKER = "PRIVATE-PROMPT-7f3a9c"
IP = "203.0.113.77"


def range_tags(first: str, last: str) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }


def run_spend_logs(
    instance: dg.DagsterInstance,
    source: SpendLogSourceResource,
    lake_dir: Path,
    first: str,
    last: str,
) -> dg.ExecuteInProcessResult:
    job = defs().resolve_job_def("litellm_to_cloudzero")
    return job.execute_in_process(
        instance=instance,
        tags=range_tags(first, last),
        resources={"spend_log_source": source, "lake": LakeResource(url=str(lake_dir))},
        run_config=QUIET,
        raise_on_error=False,
    )


def hour_metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    return {
        str(event.partition): {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
        if event.asset_key == dg.AssetKey("litellm_spend_logs")
    }


@pytest.fixture
def litellm_db(fresh_database: str) -> str:
    rows = json.loads(SAMPLES.read_text())
    for index, row in enumerate(rows):
        # Spread the real rows over two hours that straddle a month end.
        moment = "2026-10-31T23:30:00.000" if index % 2 else "2026-11-01T00:15:00.000"
        row.update(startTime=moment, endTime=moment)
        row.update(
            messages={"content": MARKER},
            response={"choices": [{"text": MARKER}]},
            proxy_server_request={"body": MARKER},
            requester_ip_address=IP,
        )
        row["metadata"] = {**(row["metadata"] or {}), "requester_ip_address": IP}
    with psycopg2.connect(fresh_database) as connection, connection.cursor() as cursor:
        create_litellm_tables(cursor)
        insert_sample_rows(cursor, rows)
    return fresh_database


def test_definitions_load_with_job_asset_and_column_schema() -> None:
    definitions = defs()
    job = definitions.resolve_job_def("litellm_to_cloudzero")
    assert job.partitions_def is not None
    spec = definitions.resolve_assets_def("litellm_spend_logs").specs_by_key[
        dg.AssetKey("litellm_spend_logs")
    ]
    schema = spec.metadata["dagster/column_schema"]
    assert {c.name for c in schema.columns} >= {"request_id", "spend", "request_tags", "api_key"}
    assert all(c.description for c in schema.columns)


def test_a_range_over_a_month_end_is_one_run_with_per_hour_metadata(
    litellm_db: str, tmp_path: Path
) -> None:
    with dg.instance_for_test() as instance:
        result = run_spend_logs(
            instance,
            SpendLogSourceResource(kind="postgres", database_url=litellm_db),
            tmp_path,
            "2026-10-31-22:00",
            "2026-11-01-01:00",
        )
        assert result.success
        assert len(instance.get_runs()) == 1
    metadata = hour_metadata(result)
    assert sorted(metadata) == [
        "2026-10-31-22:00",
        "2026-10-31-23:00",
        "2026-11-01-00:00",
        "2026-11-01-01:00",
    ]
    assert [metadata[k]["dagster/row_count"] for k in sorted(metadata)] == [0, 11, 11, 0]
    assert metadata["2026-10-31-23:00"]["distinct_models"] >= 1
    lake = Lake(str(tmp_path))
    for key, values in metadata.items():
        path = lake.hour_file("litellm_spend_logs", parse_partition_key(key))
        assert values["path"] == path
        assert Path(path).stat().st_size == values["file_bytes"]


def test_prompts_responses_and_ips_never_reach_the_lake_or_the_event_log(
    litellm_db: str, tmp_path: Path
) -> None:
    with dg.instance_for_test() as instance:
        result = run_spend_logs(
            instance,
            SpendLogSourceResource(kind="postgres", database_url=litellm_db),
            tmp_path,
            "2026-10-31-23:00",
            "2026-11-01-00:00",
        )
        assert result.success
        event_log = "\n".join(
            str(entry.dagster_event) + (entry.user_message or "")
            for entry in instance.all_logs(result.run_id)
        )
    lake_bytes = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert len(lake_bytes) > 0
    for secret in (MARKER, IP):
        assert secret.encode() not in lake_bytes
        assert secret not in event_log


def test_an_unreachable_database_fails_clearly_and_writes_nothing(tmp_path: Path) -> None:
    source = SpendLogSourceResource(
        kind="postgres", database_url="postgresql://postgres:s3cret-pw@127.0.0.1:1/litellm"
    )
    with dg.instance_for_test() as instance:
        result = run_spend_logs(instance, source, tmp_path, "2026-11-01-00:00", "2026-11-01-01:00")
        assert not result.success
        failures = [e for e in result.all_events if e.is_step_failure]
        message = str(failures[0].step_failure_data.error)
        assert "cannot connect to LiteLLM's database at 127.0.0.1" in message
        assert "s3cret-pw" not in message
        event_log = "\n".join(
            str(entry.dagster_event) + (entry.user_message or "")
            for entry in instance.all_logs(result.run_id)
        )
        assert "s3cret-pw" not in event_log
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_the_cli_materializes_a_partition_range_in_one_run(tmp_path: Path) -> None:
    env = {
        "PATH": str(Path(sys.executable).parent),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "CZ_LAKE_URL": str(tmp_path / "lake"),
        "CZ_SOURCE": "synthetic",
        "CZ_SYNTHETIC_ROWS_PER_HOUR": "50",
    }
    (tmp_path / "home").mkdir()
    completed = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "asset",
            "materialize",
            "-m",
            "cz_pipeline.definitions",
            "--select",
            "litellm_spend_logs",
            "--partition-range",
            "2026-11-01-00:00...2026-11-01-05:00",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    files = sorted((tmp_path / "lake" / "litellm_spend_logs").rglob("*.parquet"))
    assert len(files) == 6
    assert completed.stderr.count("RUN_SUCCESS") == 1
