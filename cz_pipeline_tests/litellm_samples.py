"""Real "LiteLLM_SpendLogs" rows (captured from LiteLLM 1.108.7) and a way to put them back.

Tests insert these rows into tables made by ``create_litellm_tables`` so that sources and checks
meet the exact values a real proxy stores, not only what the synthetic generator imitates.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cz_pipeline.lib.litellm_tables import SPEND_LOGS, Cursor, quote_columns

SAMPLE_ROWS_PATH = Path(__file__).parent / "data" / "litellm_spend_logs_rows.json"
ROUTE_ROWS_PATH = Path(__file__).parent / "data" / "litellm_spend_logs_routes_1.108.7.json"
"""60 rows of one hour (2026-12-02 00:00 UTC) from real provider responses on every common route:
chat, streaming, ``/v1/responses``, embeddings, Claude on chat, ``/v1/messages`` and the
``/anthropic`` pass-through (with and without prompt cache), and an unpriced in-house model."""

# jsonb columns of "LiteLLM_SpendLogs"; the JSON file holds them as objects and lists.
JSONB_COLUMNS = frozenset(
    {"metadata", "request_tags", "messages", "response", "proxy_server_request"}
)


def read_sample_rows() -> list[dict[str, Any]]:
    """The 22 real rows, every column, as LiteLLM's database returned them (fresh copies)."""
    rows: list[dict[str, Any]] = json.loads(SAMPLE_ROWS_PATH.read_text())
    return rows


ALIAS_ROWS_PATH = Path(__file__).parent / "data" / "litellm_spend_logs_aliases_1.108.7.json"
ALIAS_REST_PATH = Path(__file__).parent / "data" / "GET_spend_logs_v2_aliases_1.108.7.json"
"""6 rows LiteLLM 1.108.7 wrote for issue 11 (``shared/tools/litellm_real_proxy`` with
``fake_upstream.py``), hour 2026-12-02 02:00 UTC, and ``GET /spend/logs/v2`` returning the same
rows: Claude Sonnet 4.5 through chat, ``/v1/messages``, the pass-through as
``claude-sonnet-4-5-20250929`` and as the client's alias ``claude-sonnet-4-5``; gpt-4o with a
virtual key and with the master key (carrying ``spend_logs_metadata``)."""


def read_route_rows() -> list[dict[str, Any]]:
    """The 60 real rows of ``ROUTE_ROWS_PATH``, every column (fresh copies)."""
    rows: list[dict[str, Any]] = json.loads(ROUTE_ROWS_PATH.read_text())
    return rows


def read_alias_rows() -> list[dict[str, Any]]:
    """The 6 real rows of ``ALIAS_ROWS_PATH``, every column (fresh copies)."""
    rows: list[dict[str, Any]] = json.loads(ALIAS_ROWS_PATH.read_text())
    return rows


def read_alias_rest_rows() -> list[dict[str, Any]]:
    """The same 6 rows as ``GET /spend/logs/v2`` returned them."""
    rows: list[dict[str, Any]] = json.loads(ALIAS_REST_PATH.read_text())["data"]
    return rows


def insert_sample_rows(cursor: Cursor, rows: Sequence[dict[str, Any]]) -> int:
    """Insert ``rows`` into "LiteLLM_SpendLogs" exactly as given and return how many.

    Every key of the rows is written to the column of that name (a column the table lacks is an
    error, so drop keys yourself for a legacy table; a missing key gets the column's default);
    timestamps stay the naive-UTC strings of the file, jsonb values are sent as JSON.
    """
    for row in rows:
        columns = list(row)
        placeholders = ", ".join("%s::jsonb" if c in JSONB_COLUMNS else "%s" for c in columns)
        cursor.execute(
            f'INSERT INTO "{SPEND_LOGS}" ({quote_columns(columns)}) VALUES ({placeholders})',
            [
                json.dumps(row[c]) if c in JSONB_COLUMNS and row[c] is not None else row[c]
                for c in columns
            ],
        )
    return len(rows)
