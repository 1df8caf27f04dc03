"""Read spend logs straight from LiteLLM's PostgreSQL: one window query per run, into Arrow.

The query names its columns (prompts, responses and IPs are never read) and parses the bulky
``metadata`` JSONB once per row with ``jsonb_to_record``: every ``->>`` on that column would
de-TOAST and parse the whole ~10 KB value again. Rows stream through ADBC, which reads with
PostgreSQL's binary COPY protocol, in bounded batches. The connection is read-only with a
statement timeout, so the pipeline can never write to or stall LiteLLM's database.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa

from cz_pipeline.lib.checks import SourceTotals
from cz_pipeline.lib.hours import HourWindow, as_utc
from cz_pipeline.lib.normalize import AliasLookup
from cz_pipeline.lib.redaction import Redactor
from cz_pipeline.lib.sources.base import Extraction, SourceError
from cz_pipeline.lib.sources.read_ahead import ReadAhead
from cz_pipeline.lib.sources.row_problems import (
    COST_FIELDS,
    METADATA_NUMBERS,
    NOT_AN_OBJECT,
    NUMERIC_TEXT,
    QUOTED_CHARS,
)
from cz_pipeline.lib.spend_log_schema import EXTRACT_SCHEMA, OPTIONAL_SOURCE_COLUMNS

SPEND_LOGS_TABLE = "LiteLLM_SpendLogs"
DAILY_USER_SPEND_TABLE = "LiteLLM_DailyUserSpend"

# Output column -> SQL expression over "LiteLLM_SpendLogs" s and the parsed metadata m.
_REQUIRED_COLUMNS = (
    "request_id",
    "call_type",
    "api_key",
    "spend",
    "total_tokens",
    "prompt_tokens",
    "completion_tokens",
    "startTime",
    "endTime",
    "model",
    "model_id",
    "model_group",
    "custom_llm_provider",
    "user",
    "metadata",
    "cache_hit",
    "request_tags",
    "team_id",
    "end_user",
)

_METADATA_RECORD = (
    "user_api_key_alias text, user_api_key_team_alias text, usage_object jsonb, "
    "cost_breakdown jsonb, spend_logs_metadata jsonb"
)
# ``metadata`` when it is a JSON object, else NULL (jsonb_to_record fails on anything else). One
# function reads the column, so each row's ~10 KB value is de-TOASTed once; jsonb_typeof plus
# jsonb_to_record would decompress it twice.
_METADATA_OBJECT = (
    "jsonb_path_query_first(s.metadata, 'strict $ ? (@.type() == \"object\")', '{}', true)"
)
# Where each metadata number lives in the parsed metadata ``m``.
_METADATA_PATHS = {
    "cache_read_input_tokens": "m.usage_object->'cache_read_input_tokens'",
    "cached_tokens": "m.usage_object#>'{prompt_tokens_details,cached_tokens}'",
    "cache_creation_input_tokens": "m.usage_object->'cache_creation_input_tokens'",
    **{name: f"m.cost_breakdown->'{name}'" for name in COST_FIELDS},
}
assert set(_METADATA_PATHS) == set(METADATA_NUMBERS)


def _guarded_number(name: str) -> str:
    """The metadata number ``name`` as bigint or float8 when it is a number (or numeric text)
    that fits; NULL otherwise, so that a bad value never fails the query.

    PostgreSQL prints a JSON number in plain notation, so the length of its text bounds its
    magnitude: a length test is the range check, with no cast that could fail."""
    field = METADATA_NUMBERS[name]
    raw = _METADATA_PATHS[name]
    text = raw.replace("#>", "#>>") if "#>" in raw else raw.replace("->", "->>")
    sql_type, fits = ("bigint" if field.whole else "float8"), f"<= {field.plain_chars}"
    return (
        f"CASE jsonb_typeof({raw})"
        f" WHEN 'number' THEN CASE WHEN length({text}) {fits}"
        f" THEN ({text}){'::numeric' if field.whole else ''}::{sql_type} END"
        f" WHEN 'string' THEN CASE WHEN {text} ~ '{NUMERIC_TEXT}'"
        f" AND length(({text})::numeric::text) {fits} THEN ({text})::numeric::{sql_type} END END"
    )


def _over_inner(expression: str) -> str:
    """An expression over the parsed metadata ``m``, rewritten over the inner query ``q``."""
    return expression.replace("m.usage_object", "q.usage_object").replace(
        "m.cost_breakdown", "q.cost_breakdown"
    )


def _suspect(name: str) -> str:
    """True when the inner query read ``name`` as NULL although the row holds a value there."""
    return f"(q.{name} IS NULL AND jsonb_typeof({_over_inner(_METADATA_PATHS[name])}) <> 'null')"


def _row_problems() -> str:
    """Why a row cannot be read as LiteLLM writes it ('; '-separated), NULL when it can.

    A sound row pays one test per number (``IS NULL``, and for an absent key one lookup); the
    message is only built for the rare row that fails one."""
    # cached_tokens (OpenAI's spelling of cache reads) is only read where
    # cache_read_input_tokens is absent.
    checked = {
        name: f"(q.cache_read_input_tokens IS NULL AND {_suspect(name)})"
        if name == "cached_tokens"
        else _suspect(name)
        for name in _METADATA_PATHS
    }
    # Only the type of a non-object metadata: its content may hold anything (prompts too).
    metadata = (
        f"CASE WHEN q.metadata_is_object THEN NULL ELSE '{NOT_AN_OBJECT}' || "
        "COALESCE('a JSON ' || jsonb_typeof(q.metadata), 'NULL') END"
    )
    messages = [metadata]
    for name, condition in checked.items():
        raw = _over_inner(_METADATA_PATHS[name])
        messages.append(
            f"CASE WHEN {condition} THEN '{METADATA_NUMBERS[name].problem}' || "
            f"jsonb_typeof({raw}) || ' ' || left(({raw})::text, {QUOTED_CHARS}) END"
        )
    suspect = " OR ".join(["NOT q.metadata_is_object", *checked.values()])
    return (
        f"CASE WHEN {suspect} THEN NULLIF(concat_ws('; ',\n    "
        + ",\n    ".join(messages)
        + "), '') END"
    )


_EXPRESSIONS: dict[str, str] = {
    "request_id": "s.request_id",
    "litellm_call_id": "s.litellm_call_id",
    "call_type": "s.call_type",
    "status": "s.status",
    "start_time": 's."startTime"',
    "end_time": 's."endTime"',
    "created_at": "s.created_at",
    "request_duration_ms": "s.request_duration_ms::bigint",
    "model": "s.model",
    "model_id": "s.model_id",
    "model_group": "s.model_group",
    "custom_llm_provider": "s.custom_llm_provider",
    "api_key": "s.api_key",
    "key_alias": "m.user_api_key_alias",
    "team_id": "s.team_id",
    "team_alias": "m.user_api_key_team_alias",
    "organization_id": "s.organization_id",
    "user": 's."user"',
    "end_user": "s.end_user",
    "session_id": "s.session_id",
    "spend": "s.spend",
    "prompt_tokens": "s.prompt_tokens::bigint",
    "completion_tokens": "s.completion_tokens::bigint",
    "total_tokens": "s.total_tokens::bigint",
    "cache_hit": "s.cache_hit",
    "request_tags": "s.request_tags::text",
    "spend_logs_metadata": "m.spend_logs_metadata::text",
}
# What the inner query passes on besides those columns, for the outer one.
_INNER_EXTRAS: dict[str, str] = {
    **{name: _guarded_number(name) for name in _METADATA_PATHS},
    "usage_object": "m.usage_object",
    "cost_breakdown": "m.cost_breakdown",
    "metadata_is_object": "o.object IS NOT NULL",
    "metadata": "s.metadata",  # a TOAST pointer: de-TOASTed only to name a bad row's shape
}
# The outer query's columns that are not the inner one's as they are.
_OUTER_EXPRESSIONS: dict[str, str] = {
    "cache_read_tokens": "COALESCE(q.cache_read_input_tokens, q.cached_tokens, 0)",
    "cache_creation_tokens": "COALESCE(q.cache_creation_input_tokens, 0)",
    **{name: f"q.{name}" for name in COST_FIELDS},
    "row_problems": _row_problems(),
}
# Source column each optional output reads, for schemas that predate it.
_OPTIONAL_OUTPUTS = {
    "status": "status",
    "organization_id": "organization_id",
    "litellm_call_id": "litellm_call_id",
    "created_at": "created_at",
    "request_duration_ms": "request_duration_ms",
    "session_id": "session_id",
}
assert set(_OPTIONAL_OUTPUTS.values()) == set(OPTIONAL_SOURCE_COLUMNS)
assert set(_EXPRESSIONS) | set(_OUTER_EXPRESSIONS) == set(EXTRACT_SCHEMA.names)

_PG_TYPES = {pa.string(): "text", pa.int64(): "bigint", pa.float64(): "float8"}


def _sql_timestamp(moment: datetime) -> str:
    return f"TIMESTAMP '{moment:%Y-%m-%d %H:%M:%S}'"


def window_query(window: HourWindow, missing: frozenset[str] = frozenset()) -> str:
    """The one query that reads a window; optional columns absent from the table read as NULL.

    The inner query ``q`` reads each row's metadata once: ``o`` is the object (``OFFSET 0``
    keeps the planner from inlining it and so de-TOASTing once per use), ``m`` its keys, and
    the numbers in it are cast only when they are numbers that fit. The outer query names the
    rows that broke that rule (``row_problems``) from q's results, so a sound row pays one
    ``IS NULL`` per number for it; ``OFFSET 0`` keeps q's expressions from being evaluated twice.
    """
    inner = []
    for name, expression in {**_EXPRESSIONS, **_INNER_EXTRAS}.items():
        source_column = _OPTIONAL_OUTPUTS.get(name)
        if source_column in missing:
            field_type = EXTRACT_SCHEMA.field(name).type
            expression = f"NULL::{_PG_TYPES.get(field_type, 'timestamp(3)')}"
        inner.append(f"{expression} AS {name}")
    outer = [
        f"{_OUTER_EXPRESSIONS[name]} AS {name}" if name in _OUTER_EXPRESSIONS else f"q.{name}"
        for name in EXTRACT_SCHEMA.names
    ]
    return (
        "SELECT\n  " + ",\n  ".join(outer) + "\nFROM (\nSELECT\n  " + ",\n  ".join(inner) + "\n"
        f'FROM "{SPEND_LOGS_TABLE}" s\n'
        f"CROSS JOIN LATERAL (SELECT {_METADATA_OBJECT} AS object OFFSET 0) AS o\n"
        f"CROSS JOIN LATERAL jsonb_to_record(o.object) AS m({_METADATA_RECORD})\n"
        f'WHERE s."startTime" >= {_sql_timestamp(window.start)}'
        f' AND s."startTime" < {_sql_timestamp(window.end)}\n'
        'ORDER BY s."startTime" OFFSET 0\n) AS q\n'
        "ORDER BY q.start_time"
    )


def totals_query(window: HourWindow) -> str:
    """Row count and exact spend per hour; ``float8::text`` is the shortest exact decimal."""
    return (
        "SELECT date_trunc('hour', \"startTime\") AS hour, count(*) AS rows,"
        " sum(spend::text::numeric)::text AS spend\n"
        f'FROM "{SPEND_LOGS_TABLE}"\n'
        f'WHERE "startTime" >= {_sql_timestamp(window.start)}'
        f' AND "startTime" < {_sql_timestamp(window.end)}\n'
        "GROUP BY 1"
    )


def _totals_by_hour(rows: Iterable[tuple[Any, Any, Any]]) -> dict[datetime, SourceTotals]:
    return {
        as_utc(hour): SourceTotals(int(count), Decimal(spend or "0")) for hour, count, spend in rows
    }


def read_only_url(database_url: str, statement_timeout_ms: int) -> str:
    """Add libpq options so every transaction on the connection is read-only and time-bound.

    Repeatable read gives the per-hour totals and the rows one snapshot, so reconciling them
    tests the pipeline, not LiteLLM's writer racing it.
    """
    parts = urlsplit(database_url)
    query = dict(parse_qsl(parts.query))
    options = query.get("options", "")
    options += (
        f" -c default_transaction_read_only=on -c statement_timeout={statement_timeout_ms}"
        r" -c default_transaction_isolation=repeatable\ read -c application_name=cz-pipeline"
    )
    query["options"] = options.strip()
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


class LiteLLMPostgresSource:
    """Spend logs from a LiteLLM PostgreSQL database (``LITELLM_DATABASE_URL``)."""

    name = "postgres"

    def __init__(
        self,
        database_url: str,
        *,
        statement_timeout_s: float = 600.0,
        batch_size_hint_bytes: int = 16 * 1024 * 1024,
        read_ahead_batches: int = 2,
    ) -> None:
        self._database_url = database_url
        self._redactor = Redactor.of([database_url])
        self._statement_timeout_ms = int(statement_timeout_s * 1000)
        self._batch_size_hint_bytes = batch_size_hint_bytes
        self._read_ahead_batches = read_ahead_batches

    def __repr__(self) -> str:
        return f"LiteLLMPostgresSource(host={urlsplit(self._database_url).hostname!r})"

    def _connect(self) -> adbc.Connection:
        try:
            return adbc.connect(read_only_url(self._database_url, self._statement_timeout_ms))
        except Exception as error:
            host = urlsplit(self._database_url).hostname
            raise SourceError(
                f"cannot connect to LiteLLM's database at {host}: {self._redactor.error(error)}"
            ) from None

    def _fail(self, action: str, error: Exception) -> SourceError:
        return SourceError(f"{action} failed: {self._redactor.error(error)}")

    def _table_columns(self, cursor: Any, table: str) -> set[str]:
        cursor.execute(
            "SELECT column_name FROM information_schema.columns "
            f"WHERE table_schema = current_schema() AND table_name = '{table}'"
        )
        return {row[0] for row in cursor.fetchall()}

    def _alias_lookup(self, cursor: Any) -> tuple[AliasLookup, list[str]]:
        notes: list[str] = []
        key_aliases: dict[str, str] = {}
        team_aliases: dict[str, str] = {}
        # Deleted keys first so that a live key's current alias wins.
        for table in ("LiteLLM_DeletedVerificationToken", "LiteLLM_VerificationToken"):
            if {"token", "key_alias"} <= self._table_columns(cursor, table):
                cursor.execute(
                    f'SELECT token, key_alias FROM "{table}" '
                    "WHERE key_alias IS NOT NULL AND key_alias <> ''"
                )
                key_aliases.update(dict(cursor.fetchall()))
            else:
                notes.append(f'"{table}" not found: key aliases come from metadata only')
        if {"team_id", "team_alias"} <= self._table_columns(cursor, "LiteLLM_TeamTable"):
            cursor.execute(
                'SELECT team_id, team_alias FROM "LiteLLM_TeamTable" '
                "WHERE team_alias IS NOT NULL AND team_alias <> ''"
            )
            team_aliases.update(dict(cursor.fetchall()))
        else:
            notes.append('"LiteLLM_TeamTable" not found: team aliases come from metadata only')
        return AliasLookup(key_aliases, team_aliases), notes

    def hourly_totals(self, window: HourWindow) -> dict[datetime, SourceTotals]:
        """Rows and exact spend per hour of the window, as LiteLLM holds them now."""
        return self._totals(window)

    def _totals(
        self, window: HourWindow, snapshot_id: str | None = None
    ) -> dict[datetime, SourceTotals]:
        """Per-hour totals on a connection of their own; with ``snapshot_id`` (exported by a
        read's transaction) they count exactly the rows that read sees."""
        with self._connect() as connection, connection.cursor() as cursor:
            try:
                if snapshot_id is not None:
                    cursor.execute(f"SET TRANSACTION SNAPSHOT '{snapshot_id}'")
                cursor.execute(totals_query(window))
                rows = cursor.fetchall()
            except Exception as error:
                raise self._fail(f"counting {window}", error) from None
        return _totals_by_hour(rows)

    def daily_user_spend(self, first_day: date, last_day: date) -> pa.Table:
        """LiteLLM's ``LiteLLM_DailyUserSpend`` rows for UTC days first_day..last_day."""
        with self._connect() as connection, connection.cursor() as cursor:
            try:
                if not self._table_columns(cursor, DAILY_USER_SPEND_TABLE):
                    raise SourceError(f'table "{DAILY_USER_SPEND_TABLE}" not found')
                cursor.execute(
                    "SELECT date, api_key, model, custom_llm_provider, spend::float8 AS spend,"
                    " api_requests::bigint AS api_requests"
                    f' FROM "{DAILY_USER_SPEND_TABLE}"'
                    f" WHERE date >= '{first_day:%Y-%m-%d}' AND date <= '{last_day:%Y-%m-%d}'"
                )
                table: pa.Table = cursor.fetch_arrow_table()
            except SourceError:
                raise
            except Exception as error:
                raise self._fail(f"reading {DAILY_USER_SPEND_TABLE}", error) from None
        return table

    def extract(self, window: HourWindow) -> Extraction:
        connection = self._connect()
        try:
            cursor = connection.cursor()
            # The transaction's first statement takes its repeatable-read snapshot: its clock
            # says how new the rows read below are. Exported, the same snapshot lets a second
            # connection count the hours while this one reads the rows.
            cursor.execute("SELECT clock_timestamp(), pg_export_snapshot()")
            snapshot, snapshot_id = cursor.fetchone()
            totals = self._count_beside(window, snapshot_id)
            columns = self._table_columns(cursor, SPEND_LOGS_TABLE)
            if not columns:
                raise SourceError(f'table "{SPEND_LOGS_TABLE}" not found in LiteLLM\'s database')
            missing_required = sorted(set(_REQUIRED_COLUMNS) - columns)
            if missing_required:
                raise SourceError(
                    f'table "{SPEND_LOGS_TABLE}" lacks required columns: '
                    + ", ".join(missing_required)
                )
            missing_optional = frozenset(OPTIONAL_SOURCE_COLUMNS) - columns
            aliases, notes = self._alias_lookup(cursor)
            if missing_optional:
                notes.append(
                    f'"{SPEND_LOGS_TABLE}" predates columns {", ".join(sorted(missing_optional))}:'
                    " read as nulls"
                )
            cursor.adbc_statement.set_options(
                **{"adbc.postgresql.batch_size_hint_bytes": str(self._batch_size_hint_bytes)}
            )
            cursor.execute(window_query(window, missing_optional))
            reader = cursor.fetch_record_batch()
        except SourceError:
            connection.close()
            raise
        except Exception as error:
            connection.close()
            raise self._fail(f"reading {window}", error) from None
        # Batches are read on a thread from here on, while the caller works on earlier ones.
        source_totals: dict[datetime, SourceTotals] = {}
        batches = ReadAhead(
            self._batches(connection, cursor, reader, window, totals, source_totals),
            depth=self._read_ahead_batches,
            name="litellm-postgres-reader",
        )
        return Extraction(batches, notes, aliases, source_totals, snapshot=as_utc(snapshot))

    def _count_beside(
        self, window: HourWindow, snapshot_id: str
    ) -> Future[dict[datetime, SourceTotals]]:
        """Start the per-hour totals of the read's snapshot on a thread and connection of
        their own, so their query runs while the rows' query runs, not before it."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="litellm-postgres-totals")
        try:
            return executor.submit(self._totals, window, snapshot_id)
        finally:
            executor.shutdown(wait=False)

    def _batches(
        self,
        connection: adbc.Connection,
        cursor: adbc.Cursor,
        reader: pa.RecordBatchReader,
        window: HourWindow,
        totals: Future[dict[datetime, SourceTotals]],
        source_totals: dict[datetime, SourceTotals],
    ) -> Iterator[pa.RecordBatch]:
        """Stream the batches; the cursor must outlive the reader or the stream closes.

        ``source_totals`` is filled before the first batch is handed over; the first batch is
        read first, so the server works on both queries meanwhile. The read's transaction
        stays open until then, which keeps its exported snapshot importable."""
        try:
            batches = iter(reader)
            first = next(batches, None)
            source_totals.update(totals.result())
            if first is None:
                return
            for batch in itertools.chain([first], batches):
                yield pa.RecordBatch.from_arrays(
                    [
                        column.cast(field.type)
                        for column, field in zip(batch.columns, EXTRACT_SCHEMA, strict=True)
                    ],
                    schema=EXTRACT_SCHEMA,
                )
        except SourceError:
            raise
        except Exception as error:
            raise self._fail(f"reading {window}", error) from None
        finally:
            cursor.close()
            connection.close()
