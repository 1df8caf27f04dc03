"""Configuration from environment variables, in one place, so the README can list it."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

SOURCES = ("postgres", "api", "synthetic")
DEFAULT_LAKE_URL = str(Path.cwd() / "lake")
DEFAULT_PARTITIONS_START = "2025-01-01-00:00"
DEFAULT_DAILY_CRON = "0 2 * * *"
DEFAULT_CLOUDZERO_API_URL = "https://api.cloudzero.com"
SECRET_VARIABLES = (
    "LITELLM_DATABASE_URL",
    "LITELLM_API_KEY",
    "CLOUDZERO_API_KEY",
    "CZ_ALERT_WEBHOOK_URL",
)
"""Read by Dagster as ``EnvVar`` when a run starts; here only whether each is set."""
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


class SettingsError(ValueError):
    """An environment variable holds a value the pipeline cannot use."""


@dataclass(frozen=True)
class Settings:
    """Non-secret settings; secrets stay in the environment and reach Dagster as ``EnvVar``."""

    source: str
    lake_url: str
    partitions_start: str
    synthetic_rows_per_hour: int
    spend_tolerance: Decimal = Decimal("1e-9")
    unpriced_share_threshold: float = 0.01
    late_rows_lookback_hours: int = 72
    daily_spend_tolerance: Decimal = Decimal("0.000001")
    grain: str = "provider,model,team,api_key,user"
    daily_schedule_cron: str = DEFAULT_DAILY_CRON
    litellm_api_base: str | None = None
    cloudzero_api_url: str = DEFAULT_CLOUDZERO_API_URL
    cloudzero_connection_id: str | None = None
    dry_run_requested: bool = False
    dagster_ui_url: str | None = None
    backfill_hours_per_run: int | None = None
    secrets_set: frozenset[str] = field(default_factory=frozenset)
    """Which of :data:`SECRET_VARIABLES` hold a value (never the values themselves)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        source = _text(env, "CZ_SOURCE").lower() or default_source(env)
        if source not in SOURCES:
            raise SettingsError(f"CZ_SOURCE={source!r}: expected one of {', '.join(SOURCES)}")
        rows = env.get("CZ_SYNTHETIC_ROWS_PER_HOUR", "500")
        if not rows.isdigit():
            raise SettingsError(f"CZ_SYNTHETIC_ROWS_PER_HOUR={rows!r}: expected a whole number")
        return cls(
            spend_tolerance=_decimal(env, "CZ_SPEND_TOLERANCE", "1e-9"),
            unpriced_share_threshold=float(_decimal(env, "CZ_UNPRICED_SHARE_THRESHOLD", "0.01")),
            late_rows_lookback_hours=int(_decimal(env, "CZ_LATE_ROWS_LOOKBACK_HOURS", "72")),
            daily_spend_tolerance=_decimal(env, "CZ_DAILY_SPEND_TOLERANCE", "0.000001"),
            grain=_text(env, "CZ_CBF_GRAIN") or "provider,model,team,api_key,user",
            source=source,
            lake_url=_text(env, "CZ_LAKE_URL") or DEFAULT_LAKE_URL,
            partitions_start=_text(env, "CZ_PARTITIONS_START") or DEFAULT_PARTITIONS_START,
            synthetic_rows_per_hour=int(rows),
            daily_schedule_cron=_text(env, "CZ_DAILY_SCHEDULE_CRON") or DEFAULT_DAILY_CRON,
            litellm_api_base=clean_secret("LITELLM_API_BASE", env.get("LITELLM_API_BASE")),
            cloudzero_api_url=clean_secret("CLOUDZERO_API_URL", env.get("CLOUDZERO_API_URL"))
            or DEFAULT_CLOUDZERO_API_URL,
            cloudzero_connection_id=_text(env, "CLOUDZERO_CONNECTION_ID") or None,
            dry_run_requested=_flag(env, "CZ_DRY_RUN"),
            dagster_ui_url=_text(env, "CZ_DAGSTER_UI_URL") or None,
            secrets_set=frozenset(name for name in SECRET_VARIABLES if _text(env, name)),
            backfill_hours_per_run=_hours_per_run(env),
        )


@functools.cache
def load_settings() -> Settings:
    """The process's settings, read from the environment once and handed to every module."""
    return Settings.from_env()


def _text(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def _flag(env: Mapping[str, str], name: str) -> bool:
    text = _text(env, name).lower()
    if text not in _TRUE | _FALSE:
        raise SettingsError(f"{name}={text!r}: expected true or false")
    return text in _TRUE


def clean_secret(name: str, value: str | None) -> str | None:
    """A key or URL from variable ``name`` without surrounding whitespace; None when blank.

    A value with whitespace or a control character inside is refused: it is a paste gone wrong,
    and sending it would make the HTTP or database library quote it in an error. The message
    names the variable, never the value.
    """
    text = (value or "").strip()
    if any(not (char.isprintable() and not char.isspace()) for char in text):
        raise SettingsError(
            f"{name} holds whitespace or a control character inside its value; set it again "
            "without them (the value is not shown, as it may be a secret)"
        )
    return text or None


def cloudzero_dry_run_reason(
    has_api_key: bool, has_connection_id: bool, *, dry_run_requested: bool
) -> str | None:
    """Why uploads go to the outbox instead of CloudZero, or None when they go to CloudZero.

    A dry run happens only when asked for (``CZ_DRY_RUN=true``) or when both CloudZero
    variables are unset; half a configuration (a misspelt variable) is an error naming the
    missing one, never a silent dry run.
    """
    if dry_run_requested:
        return "CZ_DRY_RUN=true asks for a dry run"
    if has_api_key and has_connection_id:
        return None
    if has_api_key:
        raise SettingsError(
            "CLOUDZERO_API_KEY is set but CLOUDZERO_CONNECTION_ID is not: set both to upload "
            "to CloudZero, or neither (or CZ_DRY_RUN=true) for a dry run"
        )
    if has_connection_id:
        raise SettingsError(
            "CLOUDZERO_CONNECTION_ID is set but CLOUDZERO_API_KEY is not: set both to upload "
            "to CloudZero, or neither (or CZ_DRY_RUN=true) for a dry run"
        )
    return "CLOUDZERO_API_KEY and CLOUDZERO_CONNECTION_ID are both unset"


def _decimal(env: Mapping[str, str], name: str, default: str) -> Decimal:
    text = env.get(name, "").strip() or default
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise SettingsError(f"{name}={text!r}: expected a number") from None
    if not value.is_finite() or value < 0:
        raise SettingsError(f"{name}={text!r}: expected a number of 0 or more")
    return value


def _hours_per_run(env: Mapping[str, str]) -> int | None:
    """Hours in each run of a backfill; None: the whole range is one run."""
    text = env.get("CZ_BACKFILL_HOURS_PER_RUN", "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) == 0:
        raise SettingsError(
            f"CZ_BACKFILL_HOURS_PER_RUN={text!r}: expected a whole number of hours, 1 or more"
        )
    return int(text)


def default_source(env: Mapping[str, str]) -> str:
    """postgres when LiteLLM's database is configured, else its API, else synthetic traffic."""
    if _text(env, "LITELLM_DATABASE_URL"):
        return "postgres"
    if _text(env, "LITELLM_API_BASE"):
        return "api"
    return "synthetic"
