"""Configuration from environment variables, in one place, so the README can list it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

SOURCES = ("postgres", "api", "synthetic")
DEFAULT_LAKE_URL = str(Path.cwd() / "lake")
DEFAULT_PARTITIONS_START = "2025-01-01-00:00"


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
    backfill_hours_per_run: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        source = env.get("CZ_SOURCE", "").strip().lower() or default_source(env)
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
            grain=env.get("CZ_CBF_GRAIN", "").strip() or "provider,model,team,api_key,user",
            source=source,
            lake_url=env.get("CZ_LAKE_URL", "").strip() or DEFAULT_LAKE_URL,
            partitions_start=env.get("CZ_PARTITIONS_START", "").strip() or DEFAULT_PARTITIONS_START,
            synthetic_rows_per_hour=int(rows),
            backfill_hours_per_run=_hours_per_run(env),
        )


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
    if env.get("LITELLM_DATABASE_URL"):
        return "postgres"
    if env.get("LITELLM_API_BASE"):
        return "api"
    return "synthetic"
