"""How work spreads out: runs per backfill and where steps execute, chosen by environment.

Every hourly asset takes :data:`hourly_backfill_policy`, and the job and the code location's
implicit asset job (what a UI backfill runs) take :func:`step_executor`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from cz_pipeline.lib.celery_settings import celery_enabled, executor_config
from cz_pipeline.lib.settings import Settings, load_settings


def backfill_policy(settings: Settings) -> dg.BackfillPolicy:
    """One run for any range by default; ``CZ_BACKFILL_HOURS_PER_RUN`` splits it into runs."""
    hours = settings.backfill_hours_per_run
    return dg.BackfillPolicy.single_run() if hours is None else dg.BackfillPolicy.multi_run(hours)


def step_executor(env: Mapping[str, str] | None = None) -> dg.ExecutorDefinition:
    """In-process steps by default (a process per step costs seconds); Celery with a broker."""
    env = os.environ if env is None else env
    if not celery_enabled(env):
        return dg.in_process_executor
    from dagster_celery import celery_executor

    return celery_executor.configured(executor_config(env), name="celery")


hourly_backfill_policy = backfill_policy(load_settings())
