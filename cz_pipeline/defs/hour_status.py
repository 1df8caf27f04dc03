"""Where each hour stands across the assets: which hours may go on, and why others may not."""

from datetime import datetime
from typing import Any

from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.spend_log_lake import STATUS_FILE


def held_reason(lake: Lake, dataset: str, hour: datetime) -> str | None:
    """None when the hour of ``dataset`` passed its checks, else why it is held back."""
    status: dict[str, Any] | None = lake.read_json(dataset, hour, STATUS_FILE)
    if status is None:
        return f"{dataset} has no checked file for this hour; materialize it first"
    if not status["held_back"]:
        return None
    failed = [c for c in status["failed_checks"] if c["severity"] == "ERROR"]
    return "; ".join(f"{dataset}.{c['check']}: {c['reason']}" for c in failed) or "held back"
