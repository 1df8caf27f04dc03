"""Build small EXTRACT_SCHEMA tables by hand for unit tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa

from cz_pipeline.lib.spend_log_schema import EXTRACT_SCHEMA

_DEFAULTS: dict[str, Any] = {
    "call_type": "acompletion",
    "model": "openai/gpt-4o",
    "custom_llm_provider": "openai",
    "api_key": "4a68fbf9a6ece427d28a53281ac197e7c1dea03dfe238f7549276ddbfdd7b461",
    "spend": 0.000225,
    "prompt_tokens": 10,
    "completion_tokens": 20,
    "total_tokens": 30,
    "cache_hit": "None",
    "request_tags": "[]",
    "team_id": "",
    "user": "",
    "end_user": "",
}


def extract_row(request_id: str, start_time: datetime, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in EXTRACT_SCHEMA.names}
    row.update(_DEFAULTS)
    row.update(request_id=request_id, start_time=start_time, end_time=start_time, **values)
    return row


def extract_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=EXTRACT_SCHEMA)
