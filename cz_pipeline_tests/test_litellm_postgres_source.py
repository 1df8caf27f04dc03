"""The PostgreSQL source against a real database with LiteLLM's own table definitions."""

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cz_pipeline.lib.checks import VALUES_READABLE, SourceTotals
from cz_pipeline.lib.hours import HourWindow
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.litellm_tables import create_litellm_tables
from cz_pipeline.lib.normalize import normalize
from cz_pipeline.lib.sources.base import SourceError
from cz_pipeline.lib.sources.litellm_api import rows_to_extract
from cz_pipeline.lib.sources.litellm_postgres import LiteLLMPostgresSource, read_only_url
from cz_pipeline.lib.spend_log_lake import extract_to_lake
from cz_pipeline.lib.spend_log_schema import EXTRACT_SCHEMA, LAKE_SCHEMA, OPTIONAL_SOURCE_COLUMNS
from cz_pipeline_tests.fakes.litellm_api import sample_rows as rest_sample_rows
from cz_pipeline_tests.litellm_samples import (
    insert_sample_rows,
    read_alias_rest_rows,
    read_alias_rows,
)

SAMPLES = Path(__file__).parent / "data" / "litellm_spend_logs_rows.json"
SAMPLE_HOUR = HourWindow.for_hour(datetime(2026, 11, 27, 16, tzinfo=UTC))
ALIAS_HOUR = HourWindow.for_hour(datetime(2026, 12, 2, 2, tzinfo=UTC))


def sample_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(SAMPLES.read_text())
    return rows


@pytest.fixture
def litellm_db(fresh_database: str) -> str:
    with psycopg2.connect(fresh_database) as connection, connection.cursor() as cursor:
        create_litellm_tables(cursor)
    return fresh_database


def execute(url: str, sql: str, *params: Any) -> None:
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(sql, params or None)


def insert(url: str, rows: list[dict[str, Any]]) -> None:
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        insert_sample_rows(cursor, rows)


def extract_all(url: str, window: HourWindow) -> tuple[pa.Table, list[str]]:
    extraction = LiteLLMPostgresSource(url).extract(window)
    batches = list(extraction.batches)
    table = pa.Table.from_batches(batches, schema=EXTRACT_SCHEMA)
    return normalize(table, extraction.aliases), extraction.notes


def test_real_sample_rows_extract_exactly(litellm_db: str) -> None:
    rows = sample_rows()
    insert(litellm_db, rows)
    lake, _ = extract_all(litellm_db, SAMPLE_HOUR)
    by_id = {row["request_id"]: row for row in lake.to_pylist()}
    assert set(by_id) == {row["request_id"] for row in rows}
    for source_row in rows:
        row = by_id[source_row["request_id"]]
        assert row["spend"] == source_row["spend"]
        assert row["prompt_tokens"] == source_row["prompt_tokens"]
        metadata = source_row["metadata"] or {}
        assert row["key_alias"] == (metadata.get("user_api_key_alias") or None)
        assert row["team_alias"] == (metadata.get("user_api_key_team_alias") or None)
    cached = [r for r in lake.to_pylist() if r["cache_read_tokens"]]
    assert [(r["cache_read_tokens"], r["cache_creation_tokens"]) for r in cached] == [(1000, 150)]
    assert cached[0]["cache_read_cost"] == pytest.approx(0.0003)
    failures = [r for r in lake.to_pylist() if r["status"] == "failure"]
    assert len(failures) == 2
    assert all(r["spend"] == 0 for r in failures)
    assert {tuple(r["user_agent_tags"]) for r in lake.to_pylist()} == {
        ("User-Agent: curl", "User-Agent: curl/7.88.1")
    }
    with_meta = [r for r in lake.to_pylist() if r["spend_logs_metadata"]]
    assert json.loads(with_meta[0]["spend_logs_metadata"]) == {"job": "nightly", "run": 1}


# What LiteLLM's ``GET /spend/logs/v2`` rows lack, so the REST source reads it as null.
REST_CANNOT_GIVE = {"created_at"}


@pytest.mark.parametrize(
    ("database_rows", "rest_rows", "hour", "metadata"),
    [
        (sample_rows, rest_sample_rows, SAMPLE_HOUR, '{"job":"nightly","run":1}'),
        (read_alias_rows, read_alias_rest_rows, ALIAS_HOUR, '{"a_long_key":1,"zeta":"z"}'),
    ],
    ids=["22 rows", "aliases and master key"],
)
def test_both_sources_write_the_same_lake_for_the_same_rows(
    litellm_db: str,
    database_rows: Callable[[], list[dict[str, Any]]],
    rest_rows: Callable[[], list[dict[str, Any]]],
    hour: HourWindow,
    metadata: str,
) -> None:
    """Real rows as PostgreSQL stores them and as the REST API returned them make the same
    lake but for what the API does not return. jsonb prints ``spend_logs_metadata`` its own way
    (``{"zeta": "z", "a_long_key": 1}``); the lake holds one text whichever source read it."""
    insert(litellm_db, database_rows())
    from_postgres, _ = extract_all(litellm_db, hour)
    from_rest = normalize(rows_to_extract(rest_rows()))
    from_postgres, from_rest = (t.sort_by("request_id") for t in (from_postgres, from_rest))
    differing = {
        name for name in LAKE_SCHEMA.names if not from_postgres[name].equals(from_rest[name])
    }
    assert differing == REST_CANNOT_GIVE
    assert from_rest["created_at"].null_count == from_rest.num_rows
    assert from_postgres["created_at"].null_count == 0
    assert metadata in from_postgres["spend_logs_metadata"].to_pylist()


def _at(row: dict[str, Any], request_id: str, moment: str) -> dict[str, Any]:
    return {**row, "request_id": request_id, "startTime": moment, "endTime": moment}


def test_hour_boundaries_are_half_open(litellm_db: str, tmp_path: Path) -> None:
    template = sample_rows()[0]
    insert(
        litellm_db,
        [
            _at(template, "before", "2026-11-30T21:59:59.999"),
            _at(template, "first", "2026-11-30T22:00:00.000"),
            _at(template, "last-of-22", "2026-11-30T22:59:59.999"),
            _at(template, "first-of-23", "2026-11-30T23:00:00.000"),
            _at(template, "december", "2026-12-01T00:00:00.000"),
            _at(template, "after", "2026-12-01T02:00:00.000"),
        ],
    )
    window = HourWindow.from_partition_keys("2026-11-30-22:00", "2026-12-01-01:00")
    lake = Lake(str(tmp_path))
    extraction = LiteLLMPostgresSource(litellm_db).extract(window)
    summaries = extract_to_lake(extraction, window, lake, source="postgres")
    assert [(s.partition_key, s.rows) for s in summaries] == [
        ("2026-11-30-22:00", 2),
        ("2026-11-30-23:00", 1),
        ("2026-12-01-00:00", 1),
        ("2026-12-01-01:00", 0),
    ]
    ids = [
        lake.read_hour("litellm_spend_logs", s.hour).column("request_id").to_pylist()
        for s in summaries
    ]
    assert ids == [["first", "last-of-22"], ["first-of-23"], ["december"], []]


def test_older_schema_reads_missing_columns_as_nulls(fresh_database: str) -> None:
    with psycopg2.connect(fresh_database) as connection, connection.cursor() as cursor:
        create_litellm_tables(cursor, legacy=True)
    row = {k: v for k, v in sample_rows()[0].items() if k not in OPTIONAL_SOURCE_COLUMNS}
    insert(fresh_database, [row])
    lake, notes = extract_all(fresh_database, SAMPLE_HOUR)
    assert lake.num_rows == 1
    assert lake.column("status").to_pylist() == ["success"]
    assert lake.column("litellm_call_id").to_pylist() == [None]
    assert any(all(column in note for column in OPTIONAL_SOURCE_COLUMNS) for note in notes), notes


def test_missing_required_columns_are_named(litellm_db: str) -> None:
    execute(litellm_db, 'ALTER TABLE "LiteLLM_SpendLogs" DROP COLUMN team_id, DROP COLUMN spend')
    with pytest.raises(SourceError, match=r"lacks required columns: spend, team_id$"):
        LiteLLMPostgresSource(litellm_db).extract(SAMPLE_HOUR)


def test_aliases_missing_in_metadata_come_from_key_and_team_tables(litellm_db: str) -> None:
    row = sample_rows()[0]
    metadata = {**row["metadata"], "user_api_key_alias": None, "user_api_key_team_alias": None}
    insert(litellm_db, [{**row, "metadata": metadata}])
    execute(
        litellm_db,
        'INSERT INTO "LiteLLM_DeletedVerificationToken" (id, token, key_alias) '
        "VALUES ('d1', %s, 'old-alias')",
        row["api_key"],
    )
    execute(
        litellm_db,
        'INSERT INTO "LiteLLM_TeamTable" (team_id, team_alias) VALUES (%s, %s)',
        row["team_id"],
        "data-platform",
    )
    lake, _ = extract_all(litellm_db, SAMPLE_HOUR)
    assert lake.column("key_alias").to_pylist() == ["old-alias"]
    assert lake.column("team_alias").to_pylist() == ["data-platform"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://nobody:s3cret-pw@127.0.0.1:5432/postgres", 'role "nobody" does not exist'),
        ("postgresql://postgres:s3cret-pw@127.0.0.1:5432/no_such_db", "does not exist"),
        ("postgresql://postgres:s3cret-pw@127.0.0.1:1/postgres", "Connection refused"),
    ],
)
def test_connection_errors_are_clear_and_never_show_the_password(url: str, reason: str) -> None:
    with pytest.raises(SourceError) as failure:
        LiteLLMPostgresSource(url).extract(SAMPLE_HOUR)
    message = str(failure.value)
    assert "cannot connect to LiteLLM's database at 127.0.0.1" in message
    assert reason in message
    assert "s3cret-pw" not in message


def test_the_connection_is_read_only(litellm_db: str) -> None:
    with adbc.connect(read_only_url(litellm_db, 1000)) as connection:
        cursor = connection.cursor()
        with pytest.raises(adbc.Error, match="read-only transaction"):
            cursor.execute('DELETE FROM "LiteLLM_SpendLogs"')


def test_statement_timeout_applies(litellm_db: str) -> None:
    with adbc.connect(read_only_url(litellm_db, 50)) as connection:
        cursor = connection.cursor()
        cursor.execute("SELECT pg_sleep(2)")
        with pytest.raises(adbc.Error, match="statement timeout"):
            cursor.fetchall()


# --- bad rows hold back their hour, not the run -------------------------------------------------

BAD_ROW = "bad-row"
# SQL that makes one real row carry a shape LiteLLM should not write, and what row_problems says.
BAD_SHAPES = {
    "metadata array": ("'[1, 2]'::jsonb", "metadata is not a JSON object but a JSON array"),
    "metadata string": (
        "'\"free text\"'::jsonb",
        "metadata is not a JSON object but a JSON string",
    ),
    "metadata number": ("'42'::jsonb", "metadata is not a JSON object but a JSON number"),
    "metadata JSON null": ("'null'::jsonb", "metadata is not a JSON object but a JSON null"),
    "metadata SQL NULL": ("NULL", "metadata is not a JSON object but NULL"),
    "input cost n/a": (
        "jsonb_set(metadata, '{cost_breakdown,input_cost}', '\"n/a\"')",
        'metadata.cost_breakdown.input_cost is not a number in range: string "n/a"',
    ),
    "cache tokens 12abc": (
        "jsonb_set(metadata, '{usage_object,cache_read_input_tokens}', '\"12abc\"')",
        "metadata.usage_object.cache_read_input_tokens is not a whole number in range: "
        'string "12abc"',
    ),
    "cache tokens 1e20": (
        "jsonb_set(metadata, '{usage_object,cache_creation_input_tokens}', '1e20')",
        "metadata.usage_object.cache_creation_input_tokens is not a whole number in range: "
        "number 100000000000000000000",
    ),
    "cached tokens 1e20": (
        "jsonb_set(metadata, '{usage_object,prompt_tokens_details}', '{\"cached_tokens\": 1e20}')",
        "metadata.usage_object.prompt_tokens_details.cached_tokens is not a whole number "
        "in range: number 100000000000000000000",
    ),
}


@pytest.mark.parametrize("shape", BAD_SHAPES)
def test_a_bad_row_holds_back_only_its_hour_and_is_named(
    litellm_db: str, tmp_path: Path, shape: str
) -> None:
    new_metadata, problem = BAD_SHAPES[shape]
    template = sample_rows()[0]
    insert(
        litellm_db,
        [
            _at(template, "good-16", "2026-11-27T16:10:00.000"),
            _at(template, BAD_ROW, "2026-11-27T16:20:00.000"),
            _at(template, "good-17", "2026-11-27T17:10:00.000"),
        ],
    )
    execute(
        litellm_db,
        f'UPDATE "LiteLLM_SpendLogs" SET metadata = {new_metadata} WHERE request_id = %s',
        BAD_ROW,
    )
    window = HourWindow.from_partition_keys("2026-11-27-16:00", "2026-11-27-17:00")
    lake = Lake(str(tmp_path))
    bad, good = extract_to_lake(
        LiteLLMPostgresSource(litellm_db).extract(window), window, lake, source="postgres"
    )

    assert (bad.held_back, good.held_back) == (True, False)
    failed = [o for o in bad.outcomes if not o.passed]
    assert [o.check for o in failed] == [VALUES_READABLE]
    assert failed[0].offending_request_ids == (BAD_ROW,)
    assert f"request {BAD_ROW}: {problem}" in failed[0].reason
    assert "2026-11-27 16:00 UTC" in failed[0].reason
    # Nothing is lost: the bad row sits in quarantine with its spend and the reason.
    assert "litellm_spend_logs_quarantine" in bad.path
    quarantined = pq.read_table(bad.path).to_pylist()
    by_id = {row["request_id"]: row for row in quarantined}
    assert set(by_id) == {"good-16", BAD_ROW}
    assert by_id[BAD_ROW]["spend"] == template["spend"]
    assert by_id[BAD_ROW]["row_problems"] == problem
    assert by_id["good-16"]["row_problems"] is None
    assert lake.read_hour("litellm_spend_logs", good.hour).column("request_id").to_pylist() == [
        "good-17"
    ]


def test_sound_numbers_in_text_and_absent_fields_read_without_problems(litellm_db: str) -> None:
    row = sample_rows()[0]
    metadata = dict(row["metadata"])
    metadata["cost_breakdown"] = {**metadata["cost_breakdown"], "input_cost": " 1.5e-05 "}
    metadata["usage_object"] = {
        "cache_read_input_tokens": "12",
        "cache_creation_input_tokens": None,
    }
    insert(litellm_db, [{**row, "metadata": metadata}])
    lake, _ = extract_all(litellm_db, SAMPLE_HOUR)
    assert lake.column("row_problems").to_pylist() == [None]
    # LiteLLM's input_cost (1.5e-05, read from text) is the lake's three input parts together.
    parts = ("uncached_input_cost", "cache_read_cost", "cache_creation_cost")
    assert sum(lake.column(name)[0].as_py() or 0.0 for name in parts) == pytest.approx(1.5e-05)
    assert lake.column("cache_read_tokens").to_pylist() == [12]
    assert lake.column("cache_creation_tokens").to_pylist() == [0]


# --- the reader thread ----------------------------------------------------------------------------


def _pipeline_connections(url: str, settled: int | None = None) -> int:
    """Sessions the pipeline holds on the database; with ``settled``, wait (a few seconds at
    most) for that count, as a closed session leaves pg_stat_activity a moment later."""
    for _ in range(100):
        with psycopg2.connect(url) as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'cz-pipeline'"
            )
            count = int(cursor.fetchone()[0])
        if settled is None or count == settled:
            break
        time.sleep(0.05)
    return count


class FailingLake(Lake):
    def hour_writer(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")


def test_a_failed_write_closes_the_reader_and_its_connection(
    litellm_db: str, tmp_path: Path
) -> None:
    insert(litellm_db, sample_rows())
    extraction = LiteLLMPostgresSource(litellm_db, batch_size_hint_bytes=1).extract(SAMPLE_HOUR)
    # The reader's connection; the totals' own closes once they are counted.
    assert _pipeline_connections(litellm_db, settled=1) == 1
    with pytest.raises(OSError, match="disk full"):
        extract_to_lake(extraction, SAMPLE_HOUR, FailingLake(str(tmp_path)), source="postgres")
    assert _pipeline_connections(litellm_db, settled=0) == 0
    assert not [t for t in threading.enumerate() if t.name == "litellm-postgres-reader"]


def test_every_batch_arrives_through_the_reader_thread(litellm_db: str) -> None:
    rows = sample_rows()
    insert(litellm_db, rows)
    extraction = LiteLLMPostgresSource(
        litellm_db, batch_size_hint_bytes=1, read_ahead_batches=1
    ).extract(SAMPLE_HOUR)
    batches = list(extraction.batches)
    assert len(batches) > 1
    assert sum(batch.num_rows for batch in batches) == len(rows)
    assert _pipeline_connections(litellm_db, settled=0) == 0


def test_totals_counted_beside_the_read_see_its_snapshot(
    litellm_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hour's totals are counted on a second connection while the rows are read; a row
    LiteLLM commits after the read began is in neither, however late the count runs."""
    rows = sample_rows()
    insert(litellm_db, rows)
    committed = threading.Event()
    count = LiteLLMPostgresSource._totals

    def count_after_the_commit(
        source: LiteLLMPostgresSource, window: HourWindow, snapshot_id: str | None = None
    ) -> dict[datetime, SourceTotals]:
        assert committed.wait(10)
        return count(source, window, snapshot_id)

    monkeypatch.setattr(LiteLLMPostgresSource, "_totals", count_after_the_commit)
    extraction = LiteLLMPostgresSource(litellm_db).extract(SAMPLE_HOUR)
    insert(litellm_db, [_at(rows[0], "committed-after-the-read-began", "2026-11-27T16:30:00")])
    committed.set()

    read = pa.Table.from_batches(list(extraction.batches), schema=EXTRACT_SCHEMA)
    assert read.num_rows == len(rows)
    spend = sum((Decimal(str(row["spend"])) for row in rows), Decimal(0))
    assert extraction.source_totals == {SAMPLE_HOUR.start: SourceTotals(len(rows), spend)}
    now = LiteLLMPostgresSource(litellm_db).hourly_totals(SAMPLE_HOUR)
    assert now[SAMPLE_HOUR.start].rows == len(rows) + 1
