"""Dagster entry point: everything under ``defs/``, run in-process.

The in-process executor matters: a subprocess per step costs about 3 s here, more than the work.
"""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent / "defs"),
        dg.Definitions(executor=dg.in_process_executor),
    )
