"""The job that moves a range of hours from LiteLLM to CloudZero in one run."""

import dagster as dg

litellm_to_cloudzero = dg.define_asset_job(
    name="litellm_to_cloudzero",
    selection=dg.AssetSelection.groups("litellm", "cloudzero"),
    executor_def=dg.in_process_executor,
    description="Every hourly asset, LiteLLM spend logs to CloudZero, for a range of hours.",
)
