"""Resources: where spend logs come from and where the lake lives, chosen by environment."""

from __future__ import annotations

import dagster as dg

from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.settings import Settings
from cz_pipeline.lib.sources.base import SpendLogSource


class SpendLogSourceResource(dg.ConfigurableResource):
    """LiteLLM's PostgreSQL, its REST API, or seeded synthetic traffic (``CZ_SOURCE``)."""

    kind: str = "synthetic"
    database_url: str | None = None
    api_base: str | None = None
    api_key: str | None = None
    statement_timeout_s: float = 600.0
    synthetic_rows_per_hour: int = 500
    synthetic_seed: int = 0

    def build(self) -> SpendLogSource:
        if self.kind == "postgres":
            from cz_pipeline.lib.sources.litellm_postgres import LiteLLMPostgresSource

            if not self.database_url:
                raise dg.Failure("CZ_SOURCE=postgres needs LITELLM_DATABASE_URL")
            return LiteLLMPostgresSource(
                self.database_url, statement_timeout_s=self.statement_timeout_s
            )
        if self.kind == "api":
            from cz_pipeline.lib.sources.litellm_api import LiteLLMApiSource

            if not (self.api_base and self.api_key):
                raise dg.Failure("CZ_SOURCE=api needs LITELLM_API_BASE and LITELLM_API_KEY")
            return LiteLLMApiSource(self.api_base, self.api_key)
        from cz_pipeline.lib.sources.synthetic import SyntheticSource

        return SyntheticSource(self.synthetic_rows_per_hour, self.synthetic_seed)


class LakeResource(dg.ConfigurableResource):
    """The Parquet lake's root: a local folder or an fsspec URL (``CZ_LAKE_URL``)."""

    url: str

    def build(self) -> Lake:
        return Lake(self.url)


def _env_or_none(name: str, env: dict[str, str]) -> dg.EnvVar | None:
    return dg.EnvVar(name) if env.get(name) else None


def resources_from_env(env: dict[str, str]) -> dict[str, dg.ConfigurableResource]:
    settings = Settings.from_env(env)
    return {
        "spend_log_source": SpendLogSourceResource(
            kind=settings.source,
            database_url=_env_or_none("LITELLM_DATABASE_URL", env),
            api_base=env.get("LITELLM_API_BASE") or None,
            api_key=_env_or_none("LITELLM_API_KEY", env),
            synthetic_rows_per_hour=settings.synthetic_rows_per_hour,
        ),
        "lake": LakeResource(url=settings.lake_url),
    }


@dg.definitions
def resources() -> dg.Definitions:
    import os

    return dg.Definitions(resources=resources_from_env(dict(os.environ)))
