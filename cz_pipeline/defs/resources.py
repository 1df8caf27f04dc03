"""Resources: where spend logs come from and where the lake lives, chosen by environment."""

from __future__ import annotations

from decimal import Decimal

import dagster as dg

from cz_pipeline.defs.alerts import AlertWebhookResource
from cz_pipeline.lib.cbf import DEFAULT_GRAIN, Grain
from cz_pipeline.lib.cloudzero import DEFAULT_MAX_BODY_BYTES, CloudZeroClient
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.settings import (
    DEFAULT_CLOUDZERO_API_URL,
    Settings,
    SettingsError,
    clean_secret,
    cloudzero_dry_run_reason,
    load_settings,
)
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

            database_url = _secret("LITELLM_DATABASE_URL", self.database_url)
            if not database_url:
                raise dg.Failure("CZ_SOURCE=postgres needs LITELLM_DATABASE_URL")
            return LiteLLMPostgresSource(database_url, statement_timeout_s=self.statement_timeout_s)
        if self.kind == "api":
            from cz_pipeline.lib.sources.litellm_api import LiteLLMApiSource

            api_base = _secret("LITELLM_API_BASE", self.api_base)
            api_key = _secret("LITELLM_API_KEY", self.api_key)
            if not (api_base and api_key):
                raise dg.Failure("CZ_SOURCE=api needs LITELLM_API_BASE and LITELLM_API_KEY")
            return LiteLLMApiSource(api_base, api_key)
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


def _secret(name: str, value: str | None) -> str | None:
    """A key or URL as the pipeline uses it (stripped), or a Failure naming the variable."""
    try:
        return clean_secret(name, value)
    except SettingsError as error:
        raise dg.Failure(str(error)) from None


class CloudZeroResource(dg.ConfigurableResource):
    """CloudZero's AnyCost Stream connection; a dry run when both variables are unset or
    ``CZ_DRY_RUN=true``. Half a configuration fails every run that uses it, at its start."""

    api_url: str = DEFAULT_CLOUDZERO_API_URL
    api_key: str | None = None
    connection_id: str | None = None
    dry_run_requested: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    grain: str = DEFAULT_GRAIN.to_spec()
    backoff_base: float = 1.0

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.dry_run_reason()  # refuse half a configuration before any step does work

    def dry_run_reason(self) -> str | None:
        """Why this run's uploads go to the outbox, or None when they go to CloudZero."""
        try:
            return cloudzero_dry_run_reason(
                bool(clean_secret("CLOUDZERO_API_KEY", self.api_key)),
                bool(clean_secret("CLOUDZERO_CONNECTION_ID", self.connection_id)),
                dry_run_requested=self.dry_run_requested,
            )
        except SettingsError as error:
            raise dg.Failure(str(error)) from None

    @property
    def dry_run(self) -> bool:
        return self.dry_run_reason() is not None

    def client(self) -> CloudZeroClient:
        """The upload client of a run that is not a dry run."""
        api_key = _secret("CLOUDZERO_API_KEY", self.api_key)
        connection_id = _secret("CLOUDZERO_CONNECTION_ID", self.connection_id)
        if self.dry_run_requested or not (api_key and connection_id):
            raise dg.Failure(f"no CloudZero client in a dry run: {self.dry_run_reason()}")
        return CloudZeroClient(
            _secret("CLOUDZERO_API_URL", self.api_url) or DEFAULT_CLOUDZERO_API_URL,
            api_key,
            connection_id,
            max_body_bytes=self.max_body_bytes,
            backoff_base=self.backoff_base,
        )

    def line_item_grain(self) -> Grain:
        return Grain.parse(self.grain)


def resources_from_settings(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The resources of ``settings``; secrets as ``EnvVar``, resolved only when a run starts."""

    def secret(name: str) -> dg.EnvVar | None:
        return dg.EnvVar(name) if name in settings.secrets_set else None

    return {
        "alert_webhook": AlertWebhookResource(
            webhook_url=secret("CZ_ALERT_WEBHOOK_URL"),
            ui_url=settings.dagster_ui_url,
        ),
        "spend_log_source": SpendLogSourceResource(
            kind=settings.source,
            database_url=secret("LITELLM_DATABASE_URL"),
            api_base=settings.litellm_api_base,
            api_key=secret("LITELLM_API_KEY"),
            synthetic_rows_per_hour=settings.synthetic_rows_per_hour,
        ),
        "lake": LakeResource(url=settings.lake_url),
        "cloudzero": CloudZeroResource(
            api_url=settings.cloudzero_api_url,
            api_key=secret("CLOUDZERO_API_KEY"),
            connection_id=settings.cloudzero_connection_id,
            dry_run_requested=settings.dry_run_requested,
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
    return dg.Definitions(resources=resources_from_settings(load_settings()))
