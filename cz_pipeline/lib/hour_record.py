"""Each UTC hour's truth in one typed record: what was read, what the checks said, what was sent.

Every stage writes only its own piece of the hour, atomically, as versioned JSON under
``<lake>/hour_records/date=YYYY-MM-DD/hour=HH/``:

- ``spend_logs.json`` (the ``litellm_spend_logs`` step): the source, the LiteLLM snapshot it saw,
  when, rows and exact spend, the spend-log checks' verdicts;
- ``line_items.json`` (the ``cloudzero_line_items`` step): the snapshot and source totals the line
  items were built from, their rows and exact cost, the line-item checks' verdicts;
- ``delivery.json`` (the ``cloudzero_billing_drops`` step): what CloudZero (or, in a dry run,
  the outbox) was last sent, written ahead as ``sending`` before the first chunk and as
  ``delivered`` only after the last.

No two steps or runs read-modify-write one file. :func:`read_record` and :func:`read_records`
are the only readers: they merge the pieces into :class:`HourRecord`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import posixpath
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from cz_pipeline.lib.checks import CheckOutcome, Severity, SourceTotals
from cz_pipeline.lib.hours import floor_hour, partition_key
from cz_pipeline.lib.lake import Lake

RECORD_VERSION = 1
RECORDS_DATASET = "hour_records"

# The snapshot of a piece about an hour whose spend logs were never read: older than any read.
NEVER_READ = datetime(1970, 1, 1, tzinfo=UTC)

VerdictStatus = Literal["passed", "failed", "not_evaluated"]
DeliveryState = Literal["sending", "delivered", "dry_run", "failed"]


class RecordVersionError(ValueError):
    """A record piece was written by a cz-pipeline whose record format this one does not read."""


@dataclass(frozen=True)
class Verdict:
    """One check's verdict on the hour, as stored (the Dagster-free form of a CheckOutcome)."""

    check: str
    status: VerdictStatus
    severity: Severity
    reason: str
    offending_request_ids: tuple[str, ...] = ()

    @classmethod
    def of(cls, outcome: CheckOutcome) -> Verdict:
        return cls(
            outcome.check,
            "passed" if outcome.passed else "failed",
            outcome.severity,
            outcome.reason,
            tuple(outcome.offending_request_ids),
        )

    @property
    def blocking(self) -> bool:
        return self.status == "failed" and self.severity == "ERROR"


def _hold_reason(dataset: str, verdicts: Sequence[Verdict]) -> str:
    blocking = [v for v in verdicts if v.blocking]
    return "; ".join(f"{dataset}.{v.check}: {v.reason}" for v in blocking) or "held back"


@dataclass(frozen=True)
class SpendLogPiece:
    """What the ``litellm_spend_logs`` step read for the hour and what its checks said."""

    source: str
    snapshot: datetime
    extracted_at: datetime
    rows: int
    spend: Decimal
    held_back: bool
    verdicts: tuple[Verdict, ...]

    @property
    def totals(self) -> SourceTotals:
        return SourceTotals(self.rows, self.spend)


@dataclass(frozen=True)
class LineItemPiece:
    """The hour's line items: built from which snapshot, how many, how much, and the verdicts.

    ``held_because`` names the upstream reason when the spend logs were held back (no line items
    were built then, and ``snapshot`` is the held spend logs' snapshot).
    """

    snapshot: datetime
    built_at: datetime
    source_rows: int
    source_spend: Decimal
    rows: int
    cost: Decimal
    held_back: bool
    held_because: str
    verdicts: tuple[Verdict, ...]

    @property
    def source_totals(self) -> SourceTotals:
        return SourceTotals(self.source_rows, self.source_spend)


@dataclass(frozen=True)
class DeliveryPiece:
    """What CloudZero (or the outbox, in a dry run) was last sent for the hour.

    ``state`` is ``sending`` from before the first chunk until the last was accepted, then
    ``delivered`` (``dry_run``: written to the outbox), or ``failed`` with ``error``. A crash
    while sending leaves ``sending``: CloudZero may hold part of the hour.
    """

    state: DeliveryState
    dry_run: bool
    snapshot: datetime
    written_at: datetime
    run_id: str
    source_rows: int
    source_spend: Decimal
    rows: int
    cost: Decimal
    placeholder: bool
    drop_ids: tuple[str, ...] = ()
    chunks: int = 0
    bytes: int = 0
    requests: int = 0
    attempts: int = 0
    body_sha256: tuple[str, ...] = ()
    error: str = ""

    @property
    def source_totals(self) -> SourceTotals:
        return SourceTotals(self.source_rows, self.source_spend)

    def sent(self, dry_run: bool) -> bool:
        """Whether the last send finished, to CloudZero or (in a dry run) to the outbox."""
        return self.state == ("dry_run" if dry_run else "delivered")


@dataclass(frozen=True)
class HourRecord:
    """The hour as every stage last left it; a missing piece means the stage never ran."""

    hour: datetime
    spend_logs: SpendLogPiece | None = None
    line_items: LineItemPiece | None = None
    delivery: DeliveryPiece | None = None

    @property
    def verdicts(self) -> tuple[Verdict, ...]:
        return (self.spend_logs.verdicts if self.spend_logs else ()) + (
            self.line_items.verdicts if self.line_items else ()
        )

    def spend_logs_hold(self) -> str | None:
        """Why the line items may not be built from the hour's spend logs, or None."""
        if self.spend_logs is None:
            return "litellm_spend_logs has no checked file for this hour; materialize it first"
        if self.spend_logs.held_back:
            return _hold_reason("litellm_spend_logs", self.spend_logs.verdicts)
        return None

    def line_items_hold(self) -> str | None:
        """Why the hour's line items may not be sent, or None."""
        if self.line_items is None:
            return "cloudzero_line_items has no checked file for this hour; materialize it first"
        if self.line_items.held_back:
            return self.line_items.held_because or _hold_reason(
                "cloudzero_line_items", self.line_items.verdicts
            )
        return None

    def first_blocking(self) -> tuple[str, Verdict] | None:
        """(dataset, verdict) of the first blocking verdict upstream of the delivery."""
        for dataset, piece in (
            ("litellm_spend_logs", self.spend_logs),
            ("cloudzero_line_items", self.line_items),
        ):
            for verdict in piece.verdicts if piece else ():
                if verdict.blocking:
                    return dataset, verdict
        return None

    def cloudzero_may_hold_data(self, dry_run: bool) -> bool:
        """Whether the destination may hold cost for the hour, so that an empty hour must be
        cleared with a placeholder: it was sent non-empty, or its state is unknown (a crash
        mid-send, a failed send, a send to the other destination). Never sent: False."""
        sent = self.delivery
        if sent is None:
            return False
        if sent.sent(dry_run):
            return sent.rows > 0
        return True


# ---------------------------------------------------------------------------------------------
# Storage: one JSON file per piece, one codec, one reader.

Piece = SpendLogPiece | LineItemPiece | DeliveryPiece
PIECE_FILES: dict[type[Any], str] = {
    SpendLogPiece: "spend_logs.json",
    LineItemPiece: "line_items.json",
    DeliveryPiece: "delivery.json",
}
# The HourRecord field each piece file fills.
_FIELD_BY_FILE = {
    "spend_logs.json": "spend_logs",
    "line_items.json": "line_items",
    "delivery.json": "delivery",
}


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_encode(item) for item in value]
    return value


def _decode(kind: Any, value: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        origin = typing.get_origin(kind)
    if origin is tuple:
        item = typing.get_args(kind)[0]
        return tuple(_decode(item, v) for v in value)
    if kind is Decimal:
        return Decimal(value)
    if kind is datetime:
        return datetime.fromisoformat(value)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        fields = {name: _decode(hint, value[name]) for name, hint in _field_types(kind)}
        return kind(**fields)
    return value


@functools.cache
def _field_types(kind: type[Any]) -> tuple[tuple[str, Any], ...]:
    """A record dataclass's fields and their resolved types: resolving them is most of the cost
    of decoding a piece, and a backfill decodes thousands."""
    hints = typing.get_type_hints(kind)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(kind))


def _folder(lake: Lake, hour: datetime) -> str:
    return lake.hour_folder(RECORDS_DATASET, hour)


def write_piece(lake: Lake, hour: datetime, piece: Piece) -> str:
    """Write the hour's piece of one stage atomically (the stage's only writer)."""
    content = {"version": RECORD_VERSION, "hour": partition_key(hour), **_encode(piece)}
    body = json.dumps(content, indent=2, sort_keys=True).encode()
    return lake.write_bytes(RECORDS_DATASET, hour, PIECE_FILES[type(piece)], body)


def _parse(path: str, content: bytes) -> tuple[str, Piece]:
    name = posixpath.basename(path)
    kind = next(k for k, file in PIECE_FILES.items() if file == name)
    value = json.loads(content)
    version = value.pop("version", None) if isinstance(value, dict) else None
    if version != RECORD_VERSION:
        raise RecordVersionError(
            f"{path}: record version {version!r}, but this cz-pipeline reads version "
            f"{RECORD_VERSION}; upgrade cz-pipeline or re-materialize the hour"
        )
    value.pop("hour", None)
    return _FIELD_BY_FILE[name], _decode(kind, value)


def read_records(lake: Lake, hours: Iterable[datetime]) -> dict[datetime, HourRecord]:
    """Every hour's record, each merged from its pieces (one listing per day, one batch read)."""
    wanted = sorted({floor_hour(h) for h in hours})
    days = sorted({f"{h:%Y-%m-%d}" for h in wanted})
    folders = {_folder(lake, h): h for h in wanted}
    paths: list[str] = []
    for day in days:
        pattern = f"{lake.root}/{RECORDS_DATASET}/date={day}/hour=*/*.json"
        paths += [p for p in lake.glob(pattern) if posixpath.dirname(p) in folders]
    paths = [p for p in paths if posixpath.basename(p) in _FIELD_BY_FILE]
    return _merge(folders, lake.fs.cat(paths) if paths else {})


def read_record(lake: Lake, hour: datetime) -> HourRecord:
    """The hour's record as the stages last left it.

    Reads the pieces' known paths without listing the day: a step reads each hour's record
    just before writing its own piece, so this runs once per hour and stage."""
    hour = floor_hour(hour)
    folder = _folder(lake, hour)
    paths = [f"{folder}/{name}" for name in _FIELD_BY_FILE]
    contents: dict[str, bytes] = {}
    # "omit" would drop every error; only a piece that does not exist means the stage never ran.
    for path, content in lake.fs.cat(paths, on_error="return").items():
        if isinstance(content, FileNotFoundError):
            continue
        if isinstance(content, BaseException):
            raise content
        contents[path] = content
    return _merge({folder: hour}, contents)[hour]


def _merge(folders: dict[str, datetime], contents: dict[str, bytes]) -> dict[datetime, HourRecord]:
    """The records of the hours whose folders are ``folders``, from their pieces' contents."""
    pieces: dict[datetime, dict[str, Piece]] = {h: {} for h in folders.values()}
    for path, content in contents.items():
        name, piece = _parse(path, content)
        pieces[folders[posixpath.dirname(path)]][name] = piece
    return {hour: HourRecord(hour, **found) for hour, found in pieces.items()}  # type: ignore[arg-type]


def newer_snapshot(existing: Piece | None, ours: datetime) -> str | None:
    """Why data read in snapshot ``ours`` must not replace ``existing``: it came from a newer
    snapshot of LiteLLM. None when ``ours`` may replace it."""
    if existing is not None and existing.snapshot > ours:
        return (
            f"stale: this run read LiteLLM's snapshot of {ours.isoformat()}, older than the "
            f"{existing.snapshot.isoformat()} snapshot already there; skipped, the newer one stays"
        )
    return None
