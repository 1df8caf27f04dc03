"""The job that moves a range of hours from LiteLLM to CloudZero in one run."""

import dagster as dg

from cz_pipeline.defs.scale_out import step_executor

litellm_to_cloudzero = dg.define_asset_job(
    name="litellm_to_cloudzero",
    selection=dg.AssetSelection.groups("litellm", "cloudzero"),
    executor_def=step_executor(),
    description="Every hourly asset, LiteLLM spend logs to CloudZero, for a range of hours.",
)
