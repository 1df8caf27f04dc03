"""LiteLLM's own PostgreSQL tables, as its Prisma migrations create them.

The synthetic writer and the tests build these tables in a scratch database so that the
PostgreSQL source is exercised against LiteLLM's real column names, types, defaults and indexes
(``timestamp(3) without time zone`` holding naive UTC, ``double precision`` spend, text columns
that hold ``''`` rather than NULL, ...). Column order follows a database migrated by
litellm-proxy-extras 0.4.110 (LiteLLM 1.108.7): the original columns, then every later
``ALTER TABLE ... ADD COLUMN`` in migration order. Only the tables the pipeline reads are here, and
for the key and team tables only the columns relevant to resolving names (with their real types).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from cz_pipeline.lib.spend_log_schema import OPTIONAL_SOURCE_COLUMNS

SPEND_LOGS = "LiteLLM_SpendLogs"
VERIFICATION_TOKEN = "LiteLLM_VerificationToken"
DELETED_VERIFICATION_TOKEN = "LiteLLM_DeletedVerificationToken"
TEAM_TABLE = "LiteLLM_TeamTable"
DAILY_USER_SPEND = "LiteLLM_DailyUserSpend"

# Every column of "LiteLLM_SpendLogs" in physical order, with its exact PostgreSQL definition.
SPEND_LOGS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("request_id", "text NOT NULL"),
    ("call_type", "text NOT NULL"),
    ("api_key", "text NOT NULL DEFAULT ''"),
    ("spend", "double precision NOT NULL DEFAULT 0.0"),
    ("total_tokens", "integer NOT NULL DEFAULT 0"),
    ("prompt_tokens", "integer NOT NULL DEFAULT 0"),
    ("completion_tokens", "integer NOT NULL DEFAULT 0"),
    ("startTime", "timestamp(3) without time zone NOT NULL"),
    ("endTime", "timestamp(3) without time zone NOT NULL"),
    ("completionStartTime", "timestamp(3) without time zone"),
    ("model", "text NOT NULL DEFAULT ''"),
    ("model_id", "text DEFAULT ''"),
    ("model_group", "text DEFAULT ''"),
    ("custom_llm_provider", "text DEFAULT ''"),
    ("api_base", "text DEFAULT ''"),
    ("user", "text DEFAULT ''"),
    ("metadata", "jsonb DEFAULT '{}'::jsonb"),
    ("cache_hit", "text DEFAULT ''"),
    ("cache_key", "text DEFAULT ''"),
    ("request_tags", "jsonb DEFAULT '[]'::jsonb"),
    ("team_id", "text"),
    ("end_user", "text"),
    ("requester_ip_address", "text"),
    ("messages", "jsonb DEFAULT '{}'::jsonb"),
    ("response", "jsonb DEFAULT '{}'::jsonb"),
    ("proxy_server_request", "jsonb DEFAULT '{}'::jsonb"),
    ("session_id", "text"),
    ("status", "text"),
    ("mcp_namespaced_tool_name", "text"),
    ("organization_id", "text"),
    ("agent_id", "text"),
    ("request_duration_ms", "integer"),
    ("created_at", "timestamp(3) without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP"),
    ("updated_at", "timestamp(3) without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP"),
    ("litellm_call_id", "text"),
    ("billing_agent_id", "text"),
)

# What a "legacy" table lacks: exactly the optional columns the extract tolerates (added between
# 2025-04 and 2026-08), so tests can mimic an older LiteLLM without touching anything else.
LEGACY_MISSING_COLUMNS: frozenset[str] = frozenset(OPTIONAL_SOURCE_COLUMNS)

VERIFICATION_TOKEN_DDL = f"""
CREATE TABLE IF NOT EXISTS "{VERIFICATION_TOKEN}" (
    token text NOT NULL,
    key_name text,
    key_alias text,
    soft_budget_cooldown boolean NOT NULL DEFAULT false,
    spend double precision NOT NULL DEFAULT 0.0,
    expires timestamp(3) without time zone,
    models text[],
    aliases jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    config jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    user_id text,
    team_id text,
    permissions jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    max_parallel_requests integer,
    metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    blocked boolean,
    tpm_limit bigint,
    rpm_limit bigint,
    max_budget double precision,
    budget_duration text,
    budget_reset_at timestamp(3) without time zone,
    budget_id text,
    organization_id text,
    created_at timestamp(3) without time zone DEFAULT CURRENT_TIMESTAMP,
    created_by text,
    updated_at timestamp(3) without time zone DEFAULT CURRENT_TIMESTAMP,
    updated_by text,
    project_id text,
    last_active timestamp(3) without time zone,
    agent_id text,
    CONSTRAINT "{VERIFICATION_TOKEN}_pkey" PRIMARY KEY (token)
)
"""

DELETED_VERIFICATION_TOKEN_DDL = f"""
CREATE TABLE IF NOT EXISTS "{DELETED_VERIFICATION_TOKEN}" (
    id text NOT NULL,
    token text NOT NULL,
    key_name text,
    key_alias text,
    soft_budget_cooldown boolean NOT NULL DEFAULT false,
    spend double precision NOT NULL DEFAULT 0.0,
    expires timestamp(3) without time zone,
    models text[],
    aliases jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    config jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    user_id text,
    team_id text,
    permissions jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    max_parallel_requests integer,
    metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    blocked boolean,
    max_budget double precision,
    budget_id text,
    organization_id text,
    created_at timestamp(3) without time zone,
    created_by text,
    updated_at timestamp(3) without time zone,
    updated_by text,
    deleted_at timestamp(3) without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    deleted_by text,
    deleted_by_api_key text,
    litellm_changed_by text,
    last_active timestamp(3) without time zone,
    project_id text,
    agent_id text,
    CONSTRAINT "{DELETED_VERIFICATION_TOKEN}_pkey" PRIMARY KEY (id)
)
"""

TEAM_TABLE_DDL = f"""
CREATE TABLE IF NOT EXISTS "{TEAM_TABLE}" (
    team_id text NOT NULL,
    team_alias text,
    organization_id text,
    admins text[],
    members text[],
    members_with_roles jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    max_budget double precision,
    spend double precision NOT NULL DEFAULT 0.0,
    models text[],
    max_parallel_requests integer,
    tpm_limit bigint,
    rpm_limit bigint,
    budget_duration text,
    budget_reset_at timestamp(3) without time zone,
    blocked boolean NOT NULL DEFAULT false,
    created_at timestamp(3) without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at timestamp(3) without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    model_spend jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    model_max_budget jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    model_id integer,
    CONSTRAINT "{TEAM_TABLE}_pkey" PRIMARY KEY (team_id)
)
"""

# Prisma's ``id String @default(uuid())`` has no database default: the writer supplies the id,
# and ``updated_at`` (``@updatedAt``) is NOT NULL without a default, as in LiteLLM.
DAILY_USER_SPEND_DDL = f"""
CREATE TABLE IF NOT EXISTS "{DAILY_USER_SPEND}" (
    id text NOT NULL,
    user_id text,
    date text NOT NULL,
    api_key text NOT NULL,
    model text,
    model_group text,
    custom_llm_provider text,
    prompt_tokens bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    spend double precision NOT NULL DEFAULT 0.0,
    created_at timestamp(3) without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at timestamp(3) without time zone NOT NULL,
    api_requests bigint NOT NULL DEFAULT 0,
    failed_requests bigint NOT NULL DEFAULT 0,
    successful_requests bigint NOT NULL DEFAULT 0,
    cache_creation_input_tokens bigint NOT NULL DEFAULT 0,
    cache_read_input_tokens bigint NOT NULL DEFAULT 0,
    mcp_namespaced_tool_name text,
    endpoint text,
    CONSTRAINT "{DAILY_USER_SPEND}_pkey" PRIMARY KEY (id)
)
"""

# Prisma's name for the unique key, cut to PostgreSQL's 63 characters as in LiteLLM's database.
DAILY_USER_SPEND_UNIQUE_INDEX = "LiteLLM_DailyUserSpend_user_id_date_api_key_model_custom_ll_key"

_LOOKUP_INDEXES: tuple[str, ...] = (
    f'CREATE INDEX IF NOT EXISTS "{VERIFICATION_TOKEN}_user_id_team_id_idx" '
    f'ON "{VERIFICATION_TOKEN}" (user_id, team_id)',
    f'CREATE INDEX IF NOT EXISTS "{VERIFICATION_TOKEN}_team_id_idx" '
    f'ON "{VERIFICATION_TOKEN}" (team_id)',
    f'CREATE INDEX IF NOT EXISTS "{DELETED_VERIFICATION_TOKEN}_token_idx" '
    f'ON "{DELETED_VERIFICATION_TOKEN}" (token)',
    f'CREATE INDEX IF NOT EXISTS "{DELETED_VERIFICATION_TOKEN}_deleted_at_idx" '
    f'ON "{DELETED_VERIFICATION_TOKEN}" (deleted_at)',
    f'CREATE INDEX IF NOT EXISTS "{TEAM_TABLE}_organization_id_idx" '
    f'ON "{TEAM_TABLE}" (organization_id)',
    f'CREATE INDEX IF NOT EXISTS "{TEAM_TABLE}_team_alias_idx" ON "{TEAM_TABLE}" (team_alias)',
    f'CREATE INDEX IF NOT EXISTS "{DAILY_USER_SPEND}_date_idx" ON "{DAILY_USER_SPEND}" (date)',
    f'CREATE INDEX IF NOT EXISTS "{DAILY_USER_SPEND}_user_id_date_idx" '
    f'ON "{DAILY_USER_SPEND}" (user_id, date)',
    f'CREATE INDEX IF NOT EXISTS "{DAILY_USER_SPEND}_api_key_idx" '
    f'ON "{DAILY_USER_SPEND}" (api_key)',
    f'CREATE INDEX IF NOT EXISTS "{DAILY_USER_SPEND}_model_idx" ON "{DAILY_USER_SPEND}" (model)',
    f'CREATE UNIQUE INDEX IF NOT EXISTS "{DAILY_USER_SPEND_UNIQUE_INDEX}" '
    f'ON "{DAILY_USER_SPEND}" (user_id, date, api_key, model, custom_llm_provider, '
    "mcp_namespaced_tool_name, endpoint)",
)


class Cursor(Protocol):
    """The part of a DB-API cursor (psycopg2's) these helpers use."""

    def execute(self, query: str, vars: Any = ...) -> Any: ...

    def fetchall(self) -> list[tuple[Any, ...]]: ...


def spend_logs_ddl(*, legacy: bool = False) -> str:
    """``CREATE TABLE`` for "LiteLLM_SpendLogs"; ``legacy`` omits the newer columns."""
    columns = [
        f'    "{name}" {definition}'
        for name, definition in SPEND_LOGS_COLUMNS
        if not (legacy and name in LEGACY_MISSING_COLUMNS)
    ]
    columns.append(f'    CONSTRAINT "{SPEND_LOGS}_pkey" PRIMARY KEY (request_id)')
    return f'CREATE TABLE IF NOT EXISTS "{SPEND_LOGS}" (\n' + ",\n".join(columns) + "\n)"


def spend_logs_index_ddl(*, legacy: bool = False) -> list[str]:
    """The indexes LiteLLM's migrations put on "LiteLLM_SpendLogs" (the window query needs the
    ``"startTime"`` one)."""
    statements = [
        f'CREATE INDEX IF NOT EXISTS "{SPEND_LOGS}_startTime_idx" ON "{SPEND_LOGS}" ("startTime")',
        f'CREATE INDEX IF NOT EXISTS "{SPEND_LOGS}_end_user_idx" ON "{SPEND_LOGS}" (end_user)',
    ]
    if not legacy:
        statements += [
            f'CREATE INDEX IF NOT EXISTS "{SPEND_LOGS}_startTime_request_id_idx" '
            f'ON "{SPEND_LOGS}" ("startTime", request_id)',
            f'CREATE INDEX IF NOT EXISTS "{SPEND_LOGS}_session_id_idx" '
            f'ON "{SPEND_LOGS}" (session_id)',
        ]
    return statements


def all_ddl(*, legacy: bool = False) -> list[str]:
    """Every statement :func:`create_litellm_tables` runs, in order."""
    return [
        spend_logs_ddl(legacy=legacy),
        *spend_logs_index_ddl(legacy=legacy),
        VERIFICATION_TOKEN_DDL,
        DELETED_VERIFICATION_TOKEN_DDL,
        TEAM_TABLE_DDL,
        DAILY_USER_SPEND_DDL,
        *_LOOKUP_INDEXES,
    ]


def create_litellm_tables(cursor: Cursor, *, legacy: bool = False) -> None:
    """Create LiteLLM's tables where absent (``IF NOT EXISTS``), so re-running is harmless.

    ``legacy=True`` creates "LiteLLM_SpendLogs" without :data:`LEGACY_MISSING_COLUMNS`, like an
    older LiteLLM; it has no effect on a table that already exists.
    """
    for statement in all_ddl(legacy=legacy):
        cursor.execute(statement)


def existing_columns(cursor: Cursor, table: str) -> list[str]:
    """The columns ``table`` has in the current schema, in physical order (empty if absent)."""
    cursor.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    )
    return [row[0] for row in cursor.fetchall()]


def quote_columns(names: Sequence[str]) -> str:
    """A quoted, comma-separated column list (``"startTime"`` and ``"user"`` need the quotes)."""
    return ", ".join(f'"{name}"' for name in names)
