"""The one hourly partitioning that every hourly asset shares."""

import dagster as dg

from cz_pipeline.lib.hours import PARTITION_KEY_FORMAT
from cz_pipeline.lib.settings import load_settings

hourly_partitions = dg.HourlyPartitionsDefinition(
    start_date=load_settings().partitions_start,
    timezone="UTC",
    fmt=PARTITION_KEY_FORMAT,
)
