"""Run the whole job in-process against a real PostgreSQL LiteLLM, for the integration tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2

from cz_pipeline.definitions import defs
from cz_pipeline.defs.check_results import HOUR_CHECKS
from cz_pipeline.defs.resources import (
    CheckThresholdsResource,
    CloudZeroResource,
    LakeResource,
    SpendLogSourceResource,
)

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def range_tags(first: str, last: str) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }


def run_job(
    instance: dg.DagsterInstance,
    lake_dir: Path | str,
    first: str,
    last: str,
    *,
    source: dg.ConfigurableResource | None = None,
    database_url: str | None = None,
    cloudzero: CloudZeroResource | None = None,
    asset_selection: list[dg.AssetKey] | None = None,
    unpriced_share_threshold: float = 0.01,
    run_config: Mapping[str, Any] = QUIET,
) -> dg.ExecuteInProcessResult:
    resources: dict[str, Any] = {"lake": LakeResource(url=str(lake_dir))}
    if source is not None:
        resources["spend_log_source"] = source
    elif database_url is not None:
        resources["spend_log_source"] = SpendLogSourceResource(
            kind="postgres", database_url=database_url
        )
    resources["cloudzero"] = cloudzero or CloudZeroResource()
    resources["check_thresholds"] = CheckThresholdsResource(
        unpriced_share_threshold=unpriced_share_threshold
    )
    job = defs().resolve_job_def("litellm_to_cloudzero")
    return job.execute_in_process(
        instance=instance,
        tags=range_tags(first, last),
        resources=resources,
        run_config=dict(run_config),
        raise_on_error=False,
        asset_selection=asset_selection,
    )


def check_evaluations(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def hour_verdicts(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The asset's per-hour check (``hour_checks``) evaluations by hour (partition key)."""
    verdicts = {}
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.check_name == HOUR_CHECKS and evaluation.asset_key.to_user_string() == asset:
            assert evaluation.partition is not None, evaluation
            assert evaluation.partition not in verdicts, f"two verdicts for {evaluation.partition}"
            verdicts[evaluation.partition] = evaluation
    return verdicts


def failed_rules(evaluation: Any) -> set[str]:
    """The rules an hour's ``hour_checks`` verdict names as failed."""
    listed = str(evaluation.metadata["failed_rules"].value)
    return {rule.strip() for rule in listed.split(",") if rule.strip()}


def rule_verdicts(evaluation: Any) -> dict[str, str]:
    """Each rule's verdict (passed, failed, not evaluated) in an hour's ``rules`` table."""
    rows = str(evaluation.metadata["rules"].value).splitlines()[2:]
    return {row.split("|")[1].strip(" `"): row.split("|")[3].strip() for row in rows}


def failed_hours(result: dg.ExecuteInProcessResult, asset: str, rule: str) -> list[str]:
    verdicts = hour_verdicts(result, asset)
    return sorted(k for k, e in verdicts.items() if rule in failed_rules(e))


def failed_checks(result: dg.ExecuteInProcessResult) -> set[str]:
    """The run-level checks that failed, and the rules of the per-hour checks that failed."""
    failed = set()
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.passed:
            continue
        if evaluation.check_name == HOUR_CHECKS:
            failed |= failed_rules(evaluation)
        else:
            failed.add(evaluation.check_name)
    return failed


def hour_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, dict[str, Any]]:
    return {
        str(event.partition): {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
        if event.asset_key == dg.AssetKey(asset)
    }


def execute(url: str, sql: str, params: Mapping[str, Any] | tuple[Any, ...] | None = None) -> None:
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(sql, params)


def fetch_one(url: str, sql: str) -> tuple[Any, ...]:
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        row = cursor.fetchone()
    assert row is not None
    return tuple(row)
