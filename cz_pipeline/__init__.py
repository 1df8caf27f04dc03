"""LiteLLM spend logs to CloudZero, one UTC hour at a time, through a Parquet lake.

``read_hours`` reads hours of the lake into a pandas DataFrame, for notebooks.
"""

from cz_pipeline.lib.notebook import read_hours

__all__ = ["read_hours"]
