"""Secrets stay secret on every path, and half a CloudZero configuration fails at the run's start.

The pipeline tests run the whole job on synthetic traffic against the fake CloudZero over real
HTTP, with a Dagster instance on disk, then search every file of the instance (run and event
storage, compute logs) and of the lake for the key.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

import cz_pipeline
from cz_pipeline.defs.resources import CloudZeroResource, SpendLogSourceResource
from cz_pipeline.lib.cloudzero import CloudZeroClient, CloudZeroError
from cz_pipeline.lib.hours import HourWindow
from cz_pipeline.lib.redaction import REDACTED, Redactor
from cz_pipeline.lib.settings import (
    Settings,
    SettingsError,
    clean_secret,
    cloudzero_dry_run_reason,
    load_settings,
)
from cz_pipeline.lib.sources.base import SourceError
from cz_pipeline.lib.sources.litellm_api import LiteLLMApiSource
from cz_pipeline_tests.fakes.cloudzero import FakeCloudZero
from cz_pipeline_tests.fakes.litellm_api import FakeLiteLLM
from cz_pipeline_tests.pipeline_runs import run_job
from cz_pipeline_tests.test_cloudzero_client import DAY, one_hour_items

API_KEY = "czk_SECRET_5b8e1f0a93c24d7e"
CONNECTION_ID = "0e4c7a52-1d9b-4f36-8a20-6b3e9c1f7d58"
HOURS = ("2026-10-30-00:00", "2026-10-30-02:00")

# --- the one redaction helper ------------------------------------------------------------------


def test_every_spelling_of_a_secret_is_redacted() -> None:
    key = API_KEY + "\n"
    redactor = Redactor.of([key])
    for text in (
        f"Illegal header value b'{API_KEY}\\n'",  # httpx's LocalProtocolError
        f"key {API_KEY}",
        f"{key!r}",
    ):
        scrubbed = redactor.text(text)
        assert API_KEY not in scrubbed
        assert REDACTED in scrubbed


def test_url_passwords_are_redacted_whatever_the_url() -> None:
    url = "postgresql://reader:p%40ss-w0rd!@db:5432/litellm"
    redactor = Redactor.of([url])
    message = "to postgresql://reader:p%40ss-w0rd!@replica/x: password p@ss-w0rd! rejected"
    scrubbed = redactor.text(message)
    assert "p%40ss-w0rd!" not in scrubbed
    assert "p@ss-w0rd!" not in scrubbed
    assert "reader" in scrubbed  # the user and the host help and are not secret
    assert "replica" in scrubbed
    assert REDACTED in redactor.text(f"cannot reach {url}")
    assert Redactor().text("s3://user:hunter2hunter@host/x") == f"s3://user:{REDACTED}@host/x"


def test_a_header_httpx_refuses_never_quotes_the_key_nor_chains_httpx_s_error() -> None:
    """The key reached a client unstripped: httpx's LocalProtocolError quotes it; ours must not."""
    with (
        FakeCloudZero(API_KEY, CONNECTION_ID) as fake,
        CloudZeroClient(fake.url, API_KEY + "\n", CONNECTION_ID) as client,
        pytest.raises(CloudZeroError) as info,
    ):
        client.send_hour(DAY, one_hour_items(rows=1))
    assert "LocalProtocolError" in str(info.value)
    assert API_KEY not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__

    master_key = "sk-" + API_KEY
    with FakeLiteLLM([], master_key) as litellm:
        extraction = LiteLLMApiSource(litellm.url, master_key + "\n").extract(
            HourWindow.for_hour(DAY)
        )
        with pytest.raises(SourceError) as failure:
            list(extraction.batches)
    assert "LocalProtocolError" in str(failure.value)
    assert API_KEY not in str(failure.value)
    assert failure.value.__cause__ is None
    assert failure.value.__suppress_context__


# --- settings ----------------------------------------------------------------------------------


def test_keys_and_urls_from_the_environment_are_stripped() -> None:
    settings = Settings.from_env(
        {
            "LITELLM_API_BASE": " https://litellm.example.com\n",
            "CLOUDZERO_API_URL": "https://api.cloudzero.com \r\n",
            "CLOUDZERO_CONNECTION_ID": f" {CONNECTION_ID}\n",
            "CLOUDZERO_API_KEY": "\n",
            "LITELLM_API_KEY": f"{API_KEY}\n",
        }
    )
    assert settings.litellm_api_base == "https://litellm.example.com"
    assert settings.cloudzero_api_url == "https://api.cloudzero.com"
    assert settings.cloudzero_connection_id == CONNECTION_ID
    assert settings.secrets_set == frozenset({"LITELLM_API_KEY"})
    assert clean_secret("CLOUDZERO_API_KEY", f"\t{API_KEY}\r\n") == API_KEY
    assert clean_secret("CLOUDZERO_API_KEY", " \n") is None


@pytest.mark.parametrize("inside", [" ", "\n", "\t", "\x00", "\x7f", "\u200b"])
def test_a_key_with_whitespace_or_a_control_character_inside_is_refused_by_name(
    inside: str,
) -> None:
    with pytest.raises(SettingsError) as info:
        clean_secret("CLOUDZERO_API_KEY", f"{API_KEY[:8]}{inside}{API_KEY[8:]}")
    assert "CLOUDZERO_API_KEY" in str(info.value)
    assert API_KEY[:8] not in str(info.value)
    assert API_KEY[8:] not in str(info.value)


def test_a_dry_run_only_when_both_are_unset_or_when_asked() -> None:
    reason = cloudzero_dry_run_reason(False, False, dry_run_requested=False)
    assert reason == "CLOUDZERO_API_KEY and CLOUDZERO_CONNECTION_ID are both unset"
    assert cloudzero_dry_run_reason(True, True, dry_run_requested=False) is None
    asked = cloudzero_dry_run_reason(True, True, dry_run_requested=True)
    assert asked == "CZ_DRY_RUN=true asks for a dry run"
    with pytest.raises(SettingsError, match="CLOUDZERO_CONNECTION_ID is set but CLOUDZERO_API_KEY"):
        cloudzero_dry_run_reason(False, True, dry_run_requested=False)
    with pytest.raises(SettingsError, match="CLOUDZERO_API_KEY is set but CLOUDZERO_CONNECTION_ID"):
        cloudzero_dry_run_reason(True, False, dry_run_requested=False)
    assert Settings.from_env({"CZ_DRY_RUN": " TRUE "}).dry_run_requested
    with pytest.raises(SettingsError, match="CZ_DRY_RUN"):
        Settings.from_env({"CZ_DRY_RUN": "maybe"})


# Reads only: the demo may still set a variable for the process it runs (``os.environ[...] =``).
PIPELINE_VARIABLE_READ = (
    r"(os\.getenv|os\.environ\.get)\(\W*(CZ_|CLOUDZERO_|LITELLM_)"
    r"|os\.environ\[\W*(CZ_|CLOUDZERO_|LITELLM_)\w*\W*\](?!\s*=)"
    r"|Settings\.from_env\("
)


def test_settings_are_read_once_per_process_in_one_place() -> None:
    """Only lib/settings.py reads the pipeline's variables; modules take its cached load."""
    assert load_settings() is load_settings()
    package = Path(cz_pipeline.__file__).parent
    readers = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if re.search(PIPELINE_VARIABLE_READ, path.read_text())
    ]
    assert readers == ["lib/settings.py"]


# --- whole runs --------------------------------------------------------------------------------


@pytest.fixture
def instance_dir() -> Iterator[Path]:
    """On tmpfs where there is one: on a busy disk SQLite's fsyncs dominate a run."""
    shm = "/dev/shm"
    with tempfile.TemporaryDirectory(dir=shm if os.path.isdir(shm) else None) as folder:
        yield Path(folder)


@pytest.fixture
def instance(instance_dir: Path) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(temp_dir=str(instance_dir)) as the_instance:
        yield the_instance


@pytest.fixture
def fake() -> Iterator[FakeCloudZero]:
    with FakeCloudZero(API_KEY, CONNECTION_ID) as server:
        yield server


def _run(
    instance: dg.DagsterInstance, lake: Path, resource: CloudZeroResource
) -> dg.ExecuteInProcessResult:
    return run_job(
        instance,
        lake,
        *HOURS,
        source=SpendLogSourceResource(kind="synthetic", synthetic_rows_per_hour=5),
        cloudzero=resource,
        unpriced_share_threshold=1.0,
    )


def _files_holding(folder: Path, needle: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_a_key_with_a_trailing_newline_works_and_appears_nowhere(
    instance: dg.DagsterInstance, instance_dir: Path, fake: FakeCloudZero, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    resource = CloudZeroResource(
        api_url=fake.url + "\n", api_key=API_KEY + "\n", connection_id=CONNECTION_ID
    )
    result = _run(instance, lake, resource)
    assert result.success
    assert len(fake.drop_ids) >= 3  # each hour reached CloudZero with the stripped key
    compute_logs = [p for p in instance_dir.rglob("*") if p.suffix in {".out", ".err"}]
    assert compute_logs  # the search below covers them
    assert _files_holding(instance_dir, API_KEY.encode()) == []
    assert _files_holding(lake, API_KEY.encode()) == []


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(
        str(event.event_specific_data)
        for event in result.all_events
        if event.event_type in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE)
    )


def _materialized(result: dg.ExecuteInProcessResult) -> list[dg.DagsterEvent]:
    return list(result.get_asset_materialization_events())


def test_a_key_with_inner_whitespace_fails_the_run_naming_the_variable_only(
    instance: dg.DagsterInstance, instance_dir: Path, fake: FakeCloudZero, tmp_path: Path
) -> None:
    broken = API_KEY[:10] + " " + API_KEY[10:]
    resource = CloudZeroResource(api_url=fake.url, api_key=broken, connection_id=CONNECTION_ID)
    result = _run(instance, tmp_path / "lake", resource)
    assert not result.success
    assert "CLOUDZERO_API_KEY holds whitespace" in _failure_text(result)
    assert _materialized(result) == []  # refused at the start, before any step did work
    assert fake.requests == []
    for piece in (API_KEY[:10], API_KEY[10:]):
        assert _files_holding(instance_dir, piece.encode()) == []


@pytest.mark.parametrize(
    ("config", "missing"),
    [
        ({"api_key": API_KEY}, "CLOUDZERO_CONNECTION_ID"),
        ({"connection_id": CONNECTION_ID}, "CLOUDZERO_API_KEY"),
    ],
)
def test_half_a_cloudzero_configuration_fails_the_run_at_its_start(
    instance: dg.DagsterInstance,
    fake: FakeCloudZero,
    tmp_path: Path,
    config: dict[str, Any],
    missing: str,
) -> None:
    lake = tmp_path / "lake"
    result = _run(instance, lake, CloudZeroResource(api_url=fake.url, **config))
    assert not result.success
    assert re.search(rf"{missing} is not", _failure_text(result))
    assert _materialized(result) == []
    assert not (lake / "cloudzero_outbox").exists()  # no silent dry run
    assert fake.requests == []


def test_a_dry_run_says_which_variables_made_it_one(
    instance: dg.DagsterInstance, fake: FakeCloudZero, tmp_path: Path
) -> None:
    unset = _run(instance, tmp_path / "unset", CloudZeroResource(api_url=fake.url))
    assert unset.success
    logged = [
        record.user_message
        for record in instance.all_logs(unset.run_id)
        if "dry run" in record.user_message
    ]
    assert "CLOUDZERO_API_KEY and CLOUDZERO_CONNECTION_ID are both unset" in logged[0]

    asked = CloudZeroResource(
        api_url=fake.url, api_key=API_KEY, connection_id=CONNECTION_ID, dry_run_requested=True
    )
    result = _run(instance, tmp_path / "asked", asked)
    assert result.success
    logged = [
        r.user_message for r in instance.all_logs(result.run_id) if "dry run" in r.user_message
    ]
    assert "CZ_DRY_RUN=true" in logged[0]
    assert (tmp_path / "asked" / "cloudzero_outbox").exists()
    assert fake.requests == []
