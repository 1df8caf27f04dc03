"""Configuration from environment variables, in one place, so the README can list it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
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
            source=source,
            lake_url=env.get("CZ_LAKE_URL", "").strip() or DEFAULT_LAKE_URL,
            partitions_start=env.get("CZ_PARTITIONS_START", "").strip() or DEFAULT_PARTITIONS_START,
            synthetic_rows_per_hour=int(rows),
        )


def default_source(env: Mapping[str, str]) -> str:
    """postgres when LiteLLM's database is configured, else its API, else synthetic traffic."""
    if env.get("LITELLM_DATABASE_URL"):
        return "postgres"
    if env.get("LITELLM_API_BASE"):
        return "api"
    return "synthetic"
