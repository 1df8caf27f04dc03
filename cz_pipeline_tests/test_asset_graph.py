"""A snapshot of the asset graph, so lineage changes are deliberate.

After an intended change, refresh it with ``CZ_UPDATE_SNAPSHOTS=1 .venv/bin/pytest -k asset_graph``
and review the diff of ``snapshots/asset_graph.json``.
"""

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from cz_pipeline.definitions import defs

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def describe(definitions: dg.Definitions) -> dict[str, Any]:
    graph = definitions.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        spec_metadata = node.metadata
        schema = spec_metadata.get("dagster/column_schema")
        assets[key.to_user_string()] = {
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "group": node.group_name,
            "owners": sorted(node.owners),
            "kinds": sorted(node.kinds),
            "partitions": repr(node.partitions_def),
            "backfill_policy": repr(node.backfill_policy),
            "pools": sorted(definitions.resolve_assets_def(key).node_def.pools),
            "has_description": bool(node.description),
            "code_reference": "dagster/code_references" in spec_metadata,
            "columns": [c.name for c in schema.columns] if schema else None,
            "checks": sorted(c.name for c in graph.asset_check_keys if c.asset_key == key),
        }
    return {
        "assets": assets,
        "jobs": sorted(
            j.name for j in definitions.resolve_all_job_defs() if not j.name.startswith("__")
        ),
        "schedules": {
            s.name: {"cron": s.cron_schedule, "job": s.job_name, "timezone": s.execution_timezone}
            for s in definitions.schedules or []
            if isinstance(s, dg.ScheduleDefinition)
        },
        "sensors": sorted(
            s.name for s in definitions.sensors or [] if isinstance(s, dg.SensorDefinition)
        ),
    }


def test_asset_graph_matches_the_snapshot() -> None:
    current = describe(defs())
    if os.environ.get("CZ_UPDATE_SNAPSHOTS") or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_every_check_has_a_description() -> None:
    graph = defs().resolve_asset_graph()
    for check_key in graph.asset_check_keys:
        spec = graph.get_check_spec(check_key)
        assert spec.description, check_key
