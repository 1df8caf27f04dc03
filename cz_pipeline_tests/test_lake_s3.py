"""The lake on S3: moto's S3 server on loopback, started by these tests, stands in for S3.

The server runs once per module; each test gets its own bucket and its own AWS settings
(``AWS_ENDPOINT_URL`` and dummy credentials, set for that test only), exactly the variables a
deployment sets to point the lake at an S3-compatible store.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import s3fs

from cz_pipeline.defs.resources import SpendLogSourceResource
from cz_pipeline.lib.hour_record import read_record, read_records, write_piece
from cz_pipeline.lib.hours import parse_partition_key
from cz_pipeline.lib.lake import Lake
from cz_pipeline_tests.pipeline_runs import hour_metadata, run_job
from cz_pipeline_tests.test_hour_record import LINE_ITEMS, SPEND_LOGS

HOUR = datetime(2026, 11, 30, 23, tzinfo=UTC)
SCHEMA = pa.schema([("a", pa.int64())])


@pytest.fixture
def bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new, empty bucket, with the standard AWS variables pointing at the emulator."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "FSSPEC_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # s3fs caches filesystems by their arguments, not by the environment they were made in.
    s3fs.S3FileSystem.clear_instance_cache()
    name = f"lake-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(name)
    yield name
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def local_staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the lake stages files before uploading them (``TMPDIR``), to see what it leaves."""
    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    return staging


def keys(bucket: str, prefix: str = "") -> list[str]:
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    return sorted(k.removeprefix(f"{bucket}/") for k in fs.find(f"{bucket}/{prefix}"))


def pending_uploads(bucket: str) -> list[Any]:
    return list(s3fs.S3FileSystem().list_multipart_uploads(bucket))


def test_hours_on_s3_use_the_hive_layout_and_replace(
    bucket: str, local_staging: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(f"s3://{bucket}/prefix")
    assert isinstance(lake.fs, s3fs.S3FileSystem)

    def no_copies(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an S3 'rename' is a copy and a delete: write the final key once")

    monkeypatch.setattr(lake.fs, "mv", no_copies)
    monkeypatch.setattr(lake.fs, "copy", no_copies)
    written = lake.write_hour("things", HOUR, pa.table({"a": [1, 2]}))
    assert written.path == f"{bucket}/prefix/things/date=2026-11-30/hour=23/things.parquet"
    assert lake.display_path(written.path) == f"s3://{written.path}"
    assert written.rows == 2
    assert written.bytes == lake.fs.size(written.path) > 0
    assert lake.has_hour("things", HOUR)

    lake.write_hour("things", HOUR, pa.table({"a": [3]}))
    written_path = lake.write_bytes("things", HOUR, "piece.json", b'{"rows": 1}')
    assert lake.read_hour("things", HOUR).column("a").to_pylist() == [3]
    assert lake.fs.cat_file(written_path) == b'{"rows": 1}'
    assert keys(bucket) == [
        "prefix/things/date=2026-11-30/hour=23/piece.json",
        "prefix/things/date=2026-11-30/hour=23/things.parquet",
    ]
    assert list(local_staging.iterdir()) == []


def test_a_quarantined_hour_is_filed_under_the_other_dataset(bucket: str) -> None:
    lake = Lake(f"s3://{bucket}/prefix")
    lake.write_hour("things", HOUR, pa.table({"a": [1]}))
    with lake.hour_writer("things", HOUR, SCHEMA) as writer:
        writer.write(pa.table({"a": [-1]}))
        writer.destination = "things_quarantine"
    assert lake.read_hour("things", HOUR).column("a").to_pylist() == [1]
    quarantined = lake.read_hour("things_quarantine", HOUR, dataset_file="things")
    assert quarantined.column("a").to_pylist() == [-1]
    assert keys(bucket) == [
        "prefix/things/date=2026-11-30/hour=23/things.parquet",
        "prefix/things_quarantine/date=2026-11-30/hour=23/things.parquet",
    ]


def test_a_failed_write_keeps_the_previous_object_and_leaves_nothing_behind(
    bucket: str, local_staging: Path
) -> None:
    lake = Lake(f"s3://{bucket}/prefix")
    lake.write_hour("things", HOUR, pa.table({"a": [1, 2]}))
    before = lake.fs.info(lake.hour_file("things", HOUR))["ETag"]

    def fail_halfway() -> None:
        with lake.hour_writer("things", HOUR, SCHEMA) as writer:
            writer.write(pa.table({"a": list(range(100_000))}))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_halfway()

    lake.fs.invalidate_cache()
    assert lake.fs.info(lake.hour_file("things", HOUR))["ETag"] == before
    assert lake.read_hour("things", HOUR).column("a").to_pylist() == [1, 2]
    assert keys(bucket) == ["prefix/things/date=2026-11-30/hour=23/things.parquet"]
    assert pending_uploads(bucket) == []
    assert list(local_staging.iterdir()) == []


def test_a_failed_upload_keeps_the_previous_object(
    bucket: str, local_staging: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(f"s3://{bucket}/prefix")
    path = lake.write_bytes("things", HOUR, "piece.json", b"1")

    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("S3 went away")

    monkeypatch.setattr(lake.fs, "put_file", unreachable)
    with pytest.raises(ConnectionError):
        lake.write_bytes("things", HOUR, "piece.json", b"2")
    with pytest.raises(ConnectionError):
        lake.write_hour("things", HOUR, pa.table({"a": [1]}))

    assert lake.fs.cat_file(path) == b"1"
    assert keys(bucket) == ["prefix/things/date=2026-11-30/hour=23/piece.json"]
    assert list(local_staging.iterdir()) == []


def test_the_whole_job_writes_its_lake_to_s3(bucket: str) -> None:
    url = f"s3://{bucket}/lake"
    with dg.instance_for_test() as instance:
        result = run_job(
            instance,
            url,
            "2026-10-31-22:00",
            "2026-11-01-00:00",
            source=SpendLogSourceResource(kind="synthetic", synthetic_rows_per_hour=20),
        )
    assert result.success

    hours = ["date=2026-10-31/hour=22", "date=2026-10-31/hour=23", "date=2026-11-01/hour=00"]
    # Only per-hour files: no lake-wide file that two runs could both rewrite.
    expected = set()
    for hour in hours:
        expected |= {
            f"lake/litellm_spend_logs/{hour}/litellm_spend_logs.parquet",
            f"lake/cloudzero_line_items/{hour}/cloudzero_line_items.parquet",
            f"lake/hour_records/{hour}/spend_logs.json",
            f"lake/hour_records/{hour}/line_items.json",
            f"lake/hour_records/{hour}/delivery.json",
            f"lake/cloudzero_outbox/{hour}/body-001.json",
        }
    assert set(keys(bucket)) == expected

    paths = {k: m["path"] for k, m in hour_metadata(result, "litellm_spend_logs").items()}
    assert paths["2026-10-31-22:00"] == (
        f"s3://{bucket}/lake/litellm_spend_logs/{hours[0]}/litellm_spend_logs.parquet"
    )

    fs = s3fs.S3FileSystem()
    records = read_records(Lake(url), [parse_partition_key(k) for k in paths])
    first = records[parse_partition_key("2026-10-31-22:00")]
    assert first.delivery is not None
    assert (first.delivery.state, first.delivery.dry_run) == ("dry_run", True)
    body = json.loads(fs.cat_file(f"{bucket}/lake/cloudzero_outbox/{hours[0]}/body-001.json"))
    assert body["operation"] == "replace_hourly"

    # What the data team does: read the spend logs as one Hive-partitioned dataset.
    spend_logs = ds.dataset(
        f"{bucket}/lake/litellm_spend_logs", filesystem=fs, partitioning="hive"
    ).to_table()
    extracted = [r.spend_logs.rows for r in records.values() if r.spend_logs is not None]
    assert spend_logs.num_rows == sum(extracted) > 0
    assert len(extracted) == len(hours)
    assert sorted(set(spend_logs.column("hour").to_pylist())) == [0, 22, 23]
    assert sorted(set(spend_logs.column("date").to_pylist())) == ["2026-10-31", "2026-11-01"]


def test_read_hours_reads_only_the_asked_hours_from_s3(bucket: str) -> None:
    from cz_pipeline import read_hours
    from cz_pipeline_tests.test_notebook import assert_two_middle_hours, corrupt, write_hours

    lake = Lake(f"s3://{bucket}/lake")
    hours = write_hours(lake, 4)
    corrupt(lake, hours[0])
    corrupt(lake, hours[3])
    frame = read_hours(
        "litellm_spend_logs",
        hours[1],
        hours[2],
        columns=["request_id", "spend"],
        lake_url=f"s3://{bucket}/lake",
    )
    assert_two_middle_hours(frame, hours)


def test_what_another_process_wrote_is_read_whatever_this_one_listed_before(bucket: str) -> None:
    """A Celery worker lists an hour's folder in one step and reads it in a later one, while
    other processes write there in between; no cached listing may hide or shorten a file."""
    lake = Lake(f"s3://{bucket}/lake")
    elsewhere = Lake(f"s3://{bucket}/lake", skip_instance_cache=True)  # another process's
    assert elsewhere.fs is not lake.fs
    write_piece(lake, HOUR, SPEND_LOGS)
    lake.write_hour("numbers", HOUR, pa.table({"a": [1]}, schema=SCHEMA))
    assert read_records(lake, [HOUR])[HOUR].line_items is None  # lists the record's folder
    assert lake.read_hour("numbers", HOUR).num_rows == 1

    write_piece(elsewhere, HOUR, LINE_ITEMS)
    elsewhere.write_hour("numbers", HOUR, pa.table({"a": list(range(5000))}, schema=SCHEMA))

    assert read_record(lake, HOUR).line_items == LINE_ITEMS
    assert lake.read_hour("numbers", HOUR).num_rows == 5000
