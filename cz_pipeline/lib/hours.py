"""UTC hour windows: the unit of partitioning, extraction and upload."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

HOUR = timedelta(hours=1)
PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"


def as_utc(moment: datetime) -> datetime:
    """Treat a naive datetime as UTC (LiteLLM stores naive UTC) and convert an aware one to UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def floor_hour(moment: datetime) -> datetime:
    return as_utc(moment).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True, order=True)
class HourWindow:
    """A half-open UTC window ``[start, end)`` made of whole hours."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for moment in (self.start, self.end):
            if moment.tzinfo is None or moment != floor_hour(moment):
                raise ValueError(f"{moment!r} is not a whole UTC hour")
        if self.end <= self.start:
            raise ValueError(f"empty window: {self.start.isoformat()} to {self.end.isoformat()}")

    @classmethod
    def for_hour(cls, hour: datetime) -> HourWindow:
        start = floor_hour(hour)
        return cls(start, start + HOUR)

    @classmethod
    def from_partition_keys(cls, first: str, last: str) -> HourWindow:
        return cls(parse_partition_key(first), parse_partition_key(last) + HOUR)

    def hours(self) -> Iterator[datetime]:
        hour = self.start
        while hour < self.end:
            yield hour
            hour += HOUR

    def split(self, parts: int) -> list[HourWindow]:
        """Cut into at most ``parts`` consecutive windows of whole hours."""
        hours = list(self.hours())
        size = -(-len(hours) // max(1, parts))
        return [
            HourWindow(hours[i], hours[min(i + size, len(hours)) - 1] + HOUR)
            for i in range(0, len(hours), size)
        ]

    def __str__(self) -> str:
        return f"[{self.start:%Y-%m-%d %H:%M}, {self.end:%Y-%m-%d %H:%M}) UTC"


def month_window(hour: datetime) -> HourWindow:
    """Every hour of the UTC month of ``hour``."""
    start = floor_hour(hour).replace(day=1, hour=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return HourWindow(start, following)


def parse_partition_key(key: str) -> datetime:
    return datetime.strptime(key, PARTITION_KEY_FORMAT).replace(tzinfo=UTC)


def partition_key(hour: datetime) -> str:
    return floor_hour(hour).strftime(PARTITION_KEY_FORMAT)


def hive_path(hour: datetime) -> str:
    """``date=YYYY-MM-DD/hour=HH``: partition keys contain ':' and make poor file names."""
    return floor_hour(hour).strftime("date=%Y-%m-%d/hour=%H")
