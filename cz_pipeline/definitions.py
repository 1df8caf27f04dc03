"""Dagster entry point: everything under ``defs/``, linked to its source.

Steps run in-process unless a Celery broker is configured (``defs/scale_out.py``): a subprocess
per step costs about 3 s here, more than the work.
"""

import functools
import warnings
from pathlib import Path

import dagster as dg

from cz_pipeline import pool_wait
from cz_pipeline.defs.scale_out import step_executor

pool_wait.install()


@functools.cache
def _build() -> dg.Definitions:
    """Built once per process: the CLI asks for the definitions several times per command."""
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent / "defs")
    assets = [a for a in loaded.assets or [] if isinstance(a, dg.AssetsDefinition)]
    with warnings.catch_warnings():
        # Code references are marked beta; they only add links to the source in the UI.
        warnings.simplefilter("ignore", dg.BetaWarning)
        referenced = dg.with_source_code_references(assets)
    return dg.Definitions(
        assets=referenced,
        asset_checks=loaded.asset_checks,
        jobs=loaded.jobs,
        schedules=loaded.schedules,
        sensors=loaded.sensors,
        resources=loaded.resources,
        executor=step_executor(),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return _build()
