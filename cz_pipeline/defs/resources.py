"""Resources: where spend logs come from and where the lake lives, chosen by environment."""

from __future__ import annotations

from decimal import Decimal

import dagster as dg

from cz_pipeline.defs.alerts import AlertWebhookResource
from cz_pipeline.lib.cbf import DEFAULT_GRAIN, Grain
from cz_pipeline.lib.cloudzero import DEFAULT_API_URL, DEFAULT_MAX_BODY_BYTES, CloudZeroClient
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.settings import Settings
from cz_pipeline.lib.sources.base import SpendLogSource
from cz_pipeline.lib.spend_log_lake import CheckSettings


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


class CheckThresholdsResource(dg.ConfigurableResource):
    """Tolerances and thresholds of the asset checks (``CZ_*`` variables; see the README)."""

    spend_tolerance: str = "1e-9"
    unpriced_share_threshold: float = 0.01
    late_rows_lookback_hours: int = 72
    daily_spend_tolerance: str = "0.000001"

    def hour_check_settings(self) -> CheckSettings:
        return CheckSettings(Decimal(self.spend_tolerance), self.unpriced_share_threshold)


class CloudZeroResource(dg.ConfigurableResource):
    """CloudZero's AnyCost Stream connection; without a key and connection id, a dry run."""

    api_url: str = DEFAULT_API_URL
    api_key: str | None = None
    connection_id: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    grain: str = DEFAULT_GRAIN.to_spec()
    backoff_base: float = 1.0

    @property
    def dry_run(self) -> bool:
        return not (self.api_key and self.connection_id)

    def client(self) -> CloudZeroClient:
        if not (self.api_key and self.connection_id):
            raise dg.Failure("CLOUDZERO_API_KEY and CLOUDZERO_CONNECTION_ID are not both set")
        return CloudZeroClient(
            self.api_url,
            self.api_key,
            self.connection_id,
            max_body_bytes=self.max_body_bytes,
            backoff_base=self.backoff_base,
        )

    def line_item_grain(self) -> Grain:
        return Grain.parse(self.grain)


def _env_or_none(name: str, env: dict[str, str]) -> dg.EnvVar | None:
    return dg.EnvVar(name) if env.get(name) else None


def resources_from_env(env: dict[str, str]) -> dict[str, dg.ConfigurableResource]:
    settings = Settings.from_env(env)
    return {
        "alert_webhook": AlertWebhookResource(
            webhook_url=_env_or_none("CZ_ALERT_WEBHOOK_URL", env),
            ui_url=env.get("CZ_DAGSTER_UI_URL") or None,
        ),
        "spend_log_source": SpendLogSourceResource(
            kind=settings.source,
            database_url=_env_or_none("LITELLM_DATABASE_URL", env),
            api_base=env.get("LITELLM_API_BASE") or None,
            api_key=_env_or_none("LITELLM_API_KEY", env),
            synthetic_rows_per_hour=settings.synthetic_rows_per_hour,
        ),
        "lake": LakeResource(url=settings.lake_url),
        "cloudzero": CloudZeroResource(
            api_url=env.get("CLOUDZERO_API_URL") or DEFAULT_API_URL,
            api_key=_env_or_none("CLOUDZERO_API_KEY", env),
            connection_id=env.get("CLOUDZERO_CONNECTION_ID") or None,
            grain=settings.grain,
        ),
        "check_thresholds": CheckThresholdsResource(
            spend_tolerance=str(settings.spend_tolerance),
            unpriced_share_threshold=settings.unpriced_share_threshold,
            late_rows_lookback_hours=settings.late_rows_lookback_hours,
            daily_spend_tolerance=str(settings.daily_spend_tolerance),
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    import os

    return dg.Definitions(resources=resources_from_env(dict(os.environ)))
