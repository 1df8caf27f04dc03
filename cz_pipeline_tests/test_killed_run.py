"""A run killed while it holds the cloudzero_api slot is marked failed, frees the slot, and the
next run completes, with no person involved.

This is the production path, end to end: a PostgreSQL Dagster instance configured by the
repository's ``dagster.yaml`` (and, as a second case, the demo's SQLite instance as
``cz-pipeline demo`` writes it), ``dagster-daemon`` (queued run coordinator, run monitoring) on
the repository's ``workspace.yaml``, runs submitted with ``dagster job launch``. Only the
monitoring intervals are shortened, in the test instance's copy of the configuration. The fake
CloudZero holds the first upload request open, so the run worker is killed (``kill -9``) while
its upload step holds the pool's only slot.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import dagster as dg
import pytest
import yaml

from cz_pipeline.cli import LOCAL_INSTANCE_YAML
from cz_pipeline_tests.fakes.cloudzero import FakeCloudZero, Fault

REPOSITORY = Path(__file__).resolve().parents[1]
DAGSTER = Path(sys.executable).parent / "dagster"
DAGSTER_DAEMON = Path(sys.executable).parent / "dagster-daemon"
POOL = "cloudzero_api"
API_KEY = "czk_KILLTEST_4c1e9a7b20d3"
CONNECTION_ID = "7b2e4d10-3f6a-4c8e-9d21-a5b0c3e8f419"
FIRST, LAST = "2026-10-30-00:00", "2026-10-30-01:00"
# Shortened for the test only; dagster.yaml keeps production values.
TEST_MONITORING = {"poll_interval_seconds": 1, "free_slots_after_run_end_seconds": 1}
WAIT = 240.0  # seconds; generous for a loaded 2-core machine, and always bounded

T = TypeVar("T")

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker in /proc")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = WAIT) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


INSTANCES = {
    "production": (REPOSITORY / "dagster.yaml").read_text(),  # PostgreSQL
    "demo": LOCAL_INSTANCE_YAML,  # SQLite in DAGSTER_HOME, as `make demo` writes it
}


def instance_yaml(kind: str) -> dict[str, Any]:
    """The instance configuration of ``kind`` with the test's monitoring intervals."""
    config: dict[str, Any] = yaml.safe_load(INSTANCES[kind])
    config["run_monitoring"] = {**config["run_monitoring"], **TEST_MONITORING}
    return config


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def run_workers(root: int) -> list[int]:
    """Processes below ``root`` that execute a run: the code server starts each run worker with
    multiprocessing's spawn."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    below: set[int] = {root}
    grew = True
    while grew:
        grew = False
        for pid in pids:
            if pid not in below and _parent(pid) in below:
                below.add(pid)
                grew = True
    return [pid for pid in below if "spawn_main" in _cmdline(pid)]


@pytest.fixture
def fake() -> Iterator[FakeCloudZero]:
    """CloudZero that holds the first upload request open (past any wait of the test)."""
    with FakeCloudZero(API_KEY, CONNECTION_ID) as server:
        server.script(Fault.stall(WAIT + 60, commit=False))
        yield server


@pytest.fixture(params=sorted(INSTANCES))
def environment(
    request: pytest.FixtureRequest, fresh_database: str, tmp_path: Path, fake: FakeCloudZero
) -> dict[str, str]:
    """DAGSTER_HOME with the instance configuration, and the variables the daemon, the code
    server and the run workers read."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml(request.param)))
    database = urlsplit(fresh_database)  # read by the production instance, not the demo's
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CZ_", "CLOUDZERO_", "LITELLM_"))
    }
    env.update(
        DAGSTER_HOME=str(home),
        DAGSTER_PG_HOST=database.hostname or "127.0.0.1",
        DAGSTER_PG_PORT=str(database.port or 5432),
        DAGSTER_PG_USER=database.username or "postgres",
        DAGSTER_PG_PASSWORD=database.password or "",
        DAGSTER_PG_DB=database.path.lstrip("/"),
        DAGSTER_DISABLE_TELEMETRY="yes",
        CZ_SOURCE="synthetic",
        CZ_SYNTHETIC_ROWS_PER_HOUR="5",
        CZ_UNPRICED_SHARE_THRESHOLD="1",
        CZ_LAKE_URL=str(tmp_path / "lake"),
        CLOUDZERO_API_KEY=API_KEY,
        CLOUDZERO_CONNECTION_ID=CONNECTION_ID,
        CLOUDZERO_API_URL=fake.url,
    )
    return env


@pytest.fixture
def daemon(environment: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [str(DAGSTER_DAEMON), "run", "-w", "workspace.yaml"],
        cwd=REPOSITORY,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the daemon, its code server and run workers
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.fixture
def instance(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("DAGSTER_HOME", *(n for n in environment if n.startswith("DAGSTER_PG_"))):
        monkeypatch.setenv(name, environment[name])
    with dg.DagsterInstance.get() as the_instance:
        yield the_instance


def launch(environment: dict[str, str], run_id: str) -> None:
    tags = {
        "dagster/asset_partition_range_start": FIRST,
        "dagster/asset_partition_range_end": LAST,
    }
    subprocess.run(
        [
            str(DAGSTER),
            "job",
            "launch",
            "-w",
            "workspace.yaml",
            "-j",
            "litellm_to_cloudzero",
            "--run-id",
            run_id,
            "--tags",
            json.dumps(tags),
        ],
        cwd=REPOSITORY,
        env=environment,
        check=True,
        capture_output=True,
        timeout=WAIT,
    )


def slot_holders(instance: dg.DagsterInstance) -> set[str]:
    return instance.event_log_storage.get_concurrency_info(POOL).active_run_ids


def finished_status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus | None:
    run = instance.get_run_by_id(run_id)
    return run.status if run is not None and run.is_finished else None


def test_a_killed_run_is_failed_its_slot_freed_and_the_next_run_completes(
    fake: FakeCloudZero,
    environment: dict[str, str],
    instance: dg.DagsterInstance,
    daemon: subprocess.Popen[bytes],
) -> None:
    killed = "a0000000-0000-4000-8000-00000000000a"
    launch(environment, killed)
    wait_for("the upload request CloudZero holds open", fake.posts)
    assert slot_holders(instance) == {killed}  # the upload step holds the pool's only slot
    workers = wait_for("the run worker", lambda: run_workers(daemon.pid))
    assert len(workers) == 1
    os.kill(workers[0], signal.SIGKILL)

    status = wait_for("the killed run to end", lambda: finished_status(instance, killed))
    assert status == dg.DagsterRunStatus.FAILURE
    wait_for("its slot to be freed", lambda: not slot_holders(instance))

    following = "b0000000-0000-4000-8000-00000000000b"
    launch(environment, following)
    status = wait_for("the next run to end", lambda: finished_status(instance, following))
    assert status == dg.DagsterRunStatus.SUCCESS
    assert len(fake.drop_ids) >= 2  # both hours reached CloudZero
    assert not slot_holders(instance)
