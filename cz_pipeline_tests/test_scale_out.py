"""The scale-out settings: backfill shape and step executor, chosen by environment variables."""

from __future__ import annotations

import dagster as dg
import pytest

from cz_pipeline.defs.scale_out import backfill_policy, step_executor
from cz_pipeline.lib.celery_settings import (
    CelerySettingsError,
    celery_enabled,
    executor_config,
    worker_config,
)
from cz_pipeline.lib.settings import Settings, SettingsError

BROKER = "redis://:s3cret-broker@redis.internal:6379/0"
BACKEND = "redis://:s3cret-backend@redis.internal:6379/1"


def test_a_backfill_is_one_run_unless_hours_per_run_are_set() -> None:
    assert backfill_policy(Settings.from_env({})) == dg.BackfillPolicy.single_run()
    daily = backfill_policy(Settings.from_env({"CZ_BACKFILL_HOURS_PER_RUN": " 24 "}))
    assert daily == dg.BackfillPolicy.multi_run(24)
    assert daily.max_partitions_per_run == 24


@pytest.mark.parametrize("text", ["0", "-3", "1.5", "day"])
def test_hours_per_run_must_be_a_positive_whole_number(text: str) -> None:
    with pytest.raises(SettingsError, match=f"CZ_BACKFILL_HOURS_PER_RUN='{text}'"):
        Settings.from_env({"CZ_BACKFILL_HOURS_PER_RUN": text})


def test_steps_run_in_process_without_a_broker() -> None:
    assert not celery_enabled({"CZ_CELERY_BROKER_URL": "  "})
    assert step_executor({}) is dg.in_process_executor
    with pytest.raises(CelerySettingsError, match="CZ_CELERY_BROKER_URL is not set"):
        executor_config({})


def test_the_executor_config_names_the_variables_and_never_holds_a_url() -> None:
    env = {"CZ_CELERY_BROKER_URL": BROKER}
    assert executor_config(env) == {"broker": {"env": "CZ_CELERY_BROKER_URL"}, "backend": "rpc://"}
    with_backend = executor_config(env | {"CZ_CELERY_BACKEND_URL": BACKEND})
    assert with_backend["backend"] == {"env": "CZ_CELERY_BACKEND_URL"}
    assert "s3cret" not in repr(with_backend)


def test_a_worker_resolves_the_same_broker_and_backend_from_its_environment() -> None:
    env = {"CZ_CELERY_BROKER_URL": f" {BROKER} "}
    assert worker_config(env) == {"broker": BROKER, "backend": "rpc://"}
    both = worker_config(env | {"CZ_CELERY_BACKEND_URL": BACKEND})
    assert both == {"broker": BROKER, "backend": BACKEND}


def test_with_a_broker_the_job_runs_its_steps_on_celery() -> None:
    executor = step_executor({"CZ_CELERY_BROKER_URL": BROKER})
    assert executor.name == "celery"
    job = dg.define_asset_job("probe", executor_def=executor).resolve(
        asset_graph=dg.Definitions().resolve_asset_graph()
    )
    assert job.executor_def.name == "celery"
    # What Dagster stores about the job (the UI, the run records) names no broker URL.
    assert "s3cret" not in repr(job.get_job_snapshot())
