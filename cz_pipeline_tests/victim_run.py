"""One run of the job in its own process, for tests that kill it, stop it or race it.

``python -m cz_pipeline_tests.victim_run <lake> <database url> <first> <last> <cloudzero url>
<api key> <connection id> <max body bytes>`` runs the hours first..last against LiteLLM's
PostgreSQL and CloudZero (the local fake), logging warnings to stderr, and prints the
``litellm_spend_logs`` and ``cloudzero_billing_drops`` metadata per hour as JSON on stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

import dagster as dg

from cz_pipeline.defs.resources import CloudZeroResource
from cz_pipeline_tests.pipeline_runs import QUIET, hour_metadata, run_job

WARNINGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_hours(
    lake: str,
    database_url: str,
    first: str,
    last: str,
    cloudzero: CloudZeroResource,
    run_config: Mapping[str, Any] = QUIET,
) -> tuple[bool, dict[str, dict[str, dict[str, Any]]]]:
    """Run hours first..last on a throwaway instance: (success, metadata per asset and hour)."""
    with dg.instance_for_test() as instance:
        result = run_job(
            instance,
            lake,
            first,
            last,
            database_url=database_url,
            cloudzero=cloudzero,
            unpriced_share_threshold=1.0,
            run_config=run_config,
        )
        metadata = {
            asset: hour_metadata(result, asset)
            for asset in ("litellm_spend_logs", "cloudzero_billing_drops")
        }
    return result.success, metadata


def main(argv: list[str]) -> int:
    lake, database_url, first, last, api_url, api_key, connection_id, max_body = argv
    cloudzero = CloudZeroResource(
        api_url=api_url,
        api_key=api_key,
        connection_id=connection_id,
        max_body_bytes=int(max_body),
        backoff_base=0.001,
    )
    success, metadata = run_hours(lake, database_url, first, last, cloudzero, WARNINGS)
    print(json.dumps(metadata, default=str))
    return 0 if success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
