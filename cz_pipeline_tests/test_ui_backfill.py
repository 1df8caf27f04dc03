"""A range of hours launched from Dagster's UI runs as one run, on the production instance config.

These tests start Dagster the way production does: the repository's ``dagster.yaml`` (copied
byte for byte into a temporary ``DAGSTER_HOME``) against a fresh PostgreSQL database, the
repository's ``workspace.yaml``, and real ``dagster-webserver`` and ``dagster-daemon`` processes
on loopback. The backfill is launched with the same GraphQL mutation and parameters that the
UI's "Materialize selected" partition dialog sends from the asset graph, so what passes here is
what a user clicking in the UI gets: one run for the whole range (``BackfillPolicy.single_run()``)
that uploads every hour exactly once.

The daemon looks at backfills every 30 s (a constant in Dagster, not a setting) and marks one
complete only on the iteration after its run ends, so the UI test takes about a minute: about
15 s to start the webserver on a fresh database, 40 s for the backfill, 4 s to stop. The CLI
test takes about 18 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import psycopg2
import pytest

from cz_pipeline.lib.hour_record import read_records
from cz_pipeline.lib.hours import parse_partition_key
from cz_pipeline.lib.lake import Lake

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKSPACE = REPO / "workspace.yaml"
ASSETS = ["litellm_spend_logs", "cloudzero_line_items", "cloudzero_billing_drops"]
# Six hours well in the past and outside the sync sensor's look-back, so that no schedule
# or sensor tick of the running daemon touches them.
DAY = "2025-06-01"
HOURS = [f"{DAY}-{hour:02d}:00" for hour in range(6)]
ROWS_PER_HOUR = "20"
STARTUP_TIMEOUT_S = 90
BACKFILL_TIMEOUT_S = 150
# asset-graph/Utils.tsx isHiddenAssetGroupJob: Dagster's implicit asset jobs.
HIDDEN_JOB_PREFIXES = ("__ASSET_JOB", "__anonymous_asset_job")
# Environment that must not leak from the developer's shell into the Dagster processes.
FOREIGN_PREFIXES = ("DAGSTER_", "CZ_", "CLOUDZERO_", "LITELLM_")

# The UI's mutation (ui-core/src/instance/backfill/BackfillUtils.tsx), with __typename added.
LAUNCH_PARTITION_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on UnauthorizedError { message }
    ... on PipelineNotFoundError { message }
    ... on RunConflict { message }
    ... on ConflictingExecutionParamsError { message }
    ... on PresetNotFoundError { message }
    ... on RunConfigValidationInvalid { pipelineName errors { message path reason } }
    ... on PythonError { message stack }
  }
}
"""

WORKSPACE_STATUS = """
query WorkspaceStatus {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message stack }
        }
      }
    }
    ... on PythonError { message stack }
  }
}
"""

ASSET_JOBS = """
query AssetJobs($assetKeys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $assetKeys) {
    assetKey { path }
    jobNames
    backfillPolicy { policyType }
    repository { name location { name } }
  }
}
"""

BACKFILL_STATUS = """
query BackfillStatus($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      id
      status
      isAssetBackfill
      numPartitions
      error { message stack }
    }
    ... on PythonError { message stack }
  }
}
"""

BACKFILL_RUNS = """
query BackfillRuns($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs {
      results {
        runId
        status
        jobName
        tags { key value }
        assetSelection { path }
      }
    }
    ... on PythonError { message stack }
  }
}
"""

MATERIALIZATIONS = """
query Materializations($assetKey: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $assetKey) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: $partitions) { partition runId }
    }
  }
}
"""


@dataclass(frozen=True)
class DagsterHome:
    """A temporary ``DAGSTER_HOME`` holding the repository's dagster.yaml, on its own database."""

    path: Path
    database_url: str
    lake: Path
    env: dict[str, str]


def instance_home(home: Path) -> Path:
    """A ``DAGSTER_HOME`` holding the repository's dagster.yaml, byte for byte."""
    home.mkdir(parents=True)
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")  # exactly production's file
    return home


def instance_env(home: Path, database_url: str) -> dict[str, str]:
    """The environment of a Dagster process on ``home`` and that instance database."""
    url = urlsplit(database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES)}
    env.update(
        DAGSTER_HOME=str(home),
        DAGSTER_PG_HOST=url.hostname or "127.0.0.1",
        DAGSTER_PG_PORT=str(url.port or 5432),
        DAGSTER_PG_USER=unquote(url.username or "postgres"),
        # Empty with the trust authentication of CI and this machine; Dagster accepts "".
        DAGSTER_PG_PASSWORD=unquote(url.password or ""),
        DAGSTER_PG_DB=url.path.lstrip("/"),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def dagster_home(fresh_database: str, tmp_path: Path) -> DagsterHome:
    home = instance_home(tmp_path / "dagster_home")
    lake = tmp_path / "lake"
    env = instance_env(home, fresh_database)
    env.update(
        CZ_SOURCE="synthetic",
        CZ_SYNTHETIC_ROWS_PER_HOUR=ROWS_PER_HOUR,
        CZ_LAKE_URL=str(lake),
    )
    return DagsterHome(home, fresh_database, lake, env)


class Service:
    """A Dagster process in its own process group, logging to a file."""

    def __init__(
        self, name: str, args: list[str], env: Mapping[str, str], logs: Path, cwd: Path = REPO
    ) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                args,
                cwd=cwd,  # REPO for workspace.yaml's working_directory: .
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return f"--- last lines of {self.name} ---\n" + "\n".join(text[-lines:])

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)  # start_new_session: group id = leader's pid


def stop(services: list[Service], grace_s: float = 15.0) -> None:
    """SIGTERM every group at once, then SIGKILL whatever is left (code servers, run workers)."""
    for service in services:
        service.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for service in services:
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
    for service in services:
        service.signal_group(signal.SIGKILL)
        service.process.wait(timeout=10)


@dataclass
class Dagster:
    """A running dagster-webserver (and, once started, dagster-daemon) on one DAGSTER_HOME."""

    url: str
    home: DagsterHome
    logs_dir: Path
    services: list[Service]

    def start_daemon(self) -> None:
        """Start dagster-daemon; its first backfill iteration runs as soon as it is up."""
        command = [str(BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE)]
        self.services.append(Service("daemon", command, self.home.env, self.logs_dir))

    def logs(self) -> str:
        return "\n".join(service.tail() for service in self.services)

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), f"{body['errors']}\n{self.logs()}"
        data: dict[str, Any] = body["data"]
        return data


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_loaded(dagster: Dagster) -> None:
    """Wait for /server_info, then for the code location to be loaded."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        for service in dagster.services:
            assert service.process.poll() is None, f"{service.name} exited\n{dagster.logs()}"
        try:
            if httpx.get(f"{dagster.url}/server_info", timeout=5).status_code == 200:
                workspace = dagster.graphql(WORKSPACE_STATUS)["workspaceOrError"]
                entries = workspace.get("locationEntries", [])
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    for entry in entries:
                        location = entry["locationOrLoadError"]
                        assert location["__typename"] == "RepositoryLocation", location
                    return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"webserver not ready\n{dagster.logs()}"
        time.sleep(0.25)


@pytest.fixture
def dagster(dagster_home: DagsterHome, tmp_path: Path) -> Iterator[Dagster]:
    """dagster-webserver on the repo's workspace.yaml and dagster.yaml; tests start the daemon."""
    port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    command = [
        str(BIN / "dagster-webserver"),
        *("-h", "127.0.0.1", "-p", str(port), "-w", str(WORKSPACE)),
    ]
    services = [Service("webserver", command, dagster_home.env, logs)]
    try:
        running = Dagster(f"http://127.0.0.1:{port}", dagster_home, logs, services)
        wait_until_loaded(running)
        yield running
    finally:
        stop(services)


def ui_backfill_params(dagster: Dagster) -> dict[str, Any]:
    """What the asset graph's partition dialog sends for three selected assets and six hours.

    As in ``LaunchAssetExecutionButton.tsx`` and ``LaunchAssetChoosePartitionsDialog.tsx`` of
    the UI bundle that dagster-webserver 1.13.27 serves: the dialog targets the first job all
    selected assets share (on the global asset graph, Dagster's hidden ``__ASSET_JOB``) and
    sends the asset keys and the selected partition names; only for a user job (the asset graph
    of a job's page) does it add a partition-set selector. Its tags carry ``dagster/from_ui``.
    """
    keys = [{"path": [name]} for name in ASSETS]
    nodes = dagster.graphql(ASSET_JOBS, {"assetKeys": keys})["assetNodes"]
    assert sorted(n["assetKey"]["path"][0] for n in nodes) == sorted(ASSETS)
    for node in nodes:
        assert node["backfillPolicy"]["policyType"] == "SINGLE_RUN", node
    by_key = {n["assetKey"]["path"][0]: n for n in nodes}
    first = by_key[ASSETS[0]]
    common = [j for j in first["jobNames"] if all(j in n["jobNames"] for n in nodes)]
    assert common, nodes
    params: dict[str, Any] = {
        "tags": [{"key": "dagster/from_ui", "value": "true"}],
        "assetSelection": keys,
        "partitionNames": HOURS,
        "fromFailure": False,
    }
    if not common[0].startswith(HIDDEN_JOB_PREFIXES):
        params["selector"] = {
            "partitionSetName": f"{common[0]}_partition_set",
            "repositorySelector": {
                "repositoryLocationName": first["repository"]["location"]["name"],
                "repositoryName": first["repository"]["name"],
            },
        }
    return params


def wait_for_backfill(dagster: Dagster, backfill_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    while True:
        for service in dagster.services:
            assert service.process.poll() is None, f"{service.name} exited\n{dagster.logs()}"
        data = dagster.graphql(BACKFILL_STATUS, {"backfillId": backfill_id})
        backfill: dict[str, Any] = data["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
            return backfill
        assert time.monotonic() < deadline, f"backfill still {backfill}\n{dagster.logs()}"
        time.sleep(1)


def hour_folder(hour: str) -> str:
    return f"date={hour[:10]}/hour={hour[11:13]}"


def test_ui_backfill_of_a_range_is_one_run_that_uploads_each_hour_once(dagster: Dagster) -> None:
    params = ui_backfill_params(dagster)
    launched = dagster.graphql(LAUNCH_PARTITION_BACKFILL, {"backfillParams": params})
    launched = launched["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    # Started after the launch so that its first iteration, at startup, submits the run: the
    # next one, 30 s later, marks the backfill complete. Started before, it could have just
    # ticked, and the test would wait a further 30 s.
    dagster.start_daemon()

    backfill = wait_for_backfill(dagster, backfill_id)
    assert backfill["status"] in ("COMPLETED_SUCCESS", "COMPLETED"), (backfill, dagster.logs())

    runs = dagster.graphql(
        BACKFILL_RUNS, {"filter": {"tags": [{"key": "dagster/backfill", "value": backfill_id}]}}
    )["runsOrError"]["results"]
    assert len(runs) == 1, runs  # single_run(): the whole range in one run
    run = runs[0]
    assert run["status"] == "SUCCESS", (run, dagster.logs())
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/asset_partition_range_start"] == HOURS[0]
    assert tags["dagster/asset_partition_range_end"] == HOURS[-1]
    assert tags["dagster/from_ui"] == "true"
    assert sorted(a["path"][0] for a in run["assetSelection"]) == sorted(ASSETS)

    # Every hour of every asset materialized exactly once, by that run.
    for asset in ASSETS:
        events = dagster.graphql(
            MATERIALIZATIONS, {"assetKey": {"path": [asset]}, "partitions": HOURS}
        )["assetOrError"]["assetMaterializations"]
        assert sorted(e["partition"] for e in events) == HOURS, (asset, events)
        assert {e["runId"] for e in events} == {run["runId"]}

    # The lake: one dry-run delivery record and one request body per hour, and nothing else.
    lake = Lake(str(dagster.home.lake))
    records = read_records(lake, [parse_partition_key(h) for h in HOURS])
    for record in records.values():
        assert record.delivery is not None
        assert record.delivery.state == "dry_run", record
        assert record.delivery.dry_run, record
        assert record.delivery.chunks == 1, record
    outbox = dagster.home.lake / "cloudzero_outbox"
    bodies = sorted(outbox.glob("date=*/hour=*/body-*.json"))
    assert [p.relative_to(outbox).as_posix() for p in bodies] == [
        f"{hour_folder(h)}/body-001.json" for h in HOURS
    ]


def test_cli_range_run_is_stored_in_the_postgres_instance(dagster_home: DagsterHome) -> None:
    """``dagster asset materialize --partition-range`` with exactly the repo's dagster.yaml."""
    result = subprocess.run(
        [
            str(BIN / "dagster"),
            *("asset", "materialize", "-m", "cz_pipeline.definitions", "--select", "*"),
            *("--partition-range", f"{HOURS[0]}...{HOURS[-1]}"),
        ],
        cwd=REPO,
        env=dagster_home.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    with psycopg2.connect(dagster_home.database_url) as connection, connection.cursor() as cur:
        cur.execute("SELECT run_id, status FROM runs")
        runs = cur.fetchall()
        assert len(runs) == 1, runs
        run_id, status = runs[0]
        assert status == "SUCCESS"
        cur.execute("SELECT key, value FROM run_tags WHERE run_id = %s", (run_id,))
        tags = dict(cur.fetchall())
        cur.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s "
            "AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            (run_id,),
        )
        (materializations,) = cur.fetchone() or (0,)
    connection.close()
    assert tags["dagster/asset_partition_range_start"] == HOURS[0]
    assert tags["dagster/asset_partition_range_end"] == HOURS[-1]
    assert materializations == len(ASSETS) * len(HOURS)
    records = read_records(Lake(str(dagster_home.lake)), [parse_partition_key(h) for h in HOURS])
    assert [r.delivery and r.delivery.state for r in records.values()] == ["dry_run"] * len(HOURS)


CHECK_EXECUTIONS = """
query CheckExecutions($assetKey: AssetKeyInput!, $checkName: String!) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, limit: 100) {
    runId
    status
    partition
    evaluation {
      success
      severity
      description
      partition
      metadataEntries {
        label
        ... on JsonMetadataEntry { jsonString }
        ... on MarkdownMetadataEntry { mdStr }
      }
    }
  }
}
"""
# Each hourly asset has one per-hour check; its rules are listed in each verdict's metadata.
PER_HOUR_CHECKS = {"litellm_spend_logs": ["hour_checks"], "cloudzero_line_items": ["hour_checks"]}


def dg_launch(home: DagsterHome, first: str, last: str) -> None:
    """The README's command for a range of hours: ``dg launch`` with a partition range."""
    subprocess.run(
        [
            str(BIN / "dg"),
            *("launch", "--job", "litellm_to_cloudzero", "--partition-range", f"{first}...{last}"),
        ],
        cwd=REPO,
        env=home.env | {"VIRTUAL_ENV": str(BIN.parent)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def executions(dagster: Dagster, asset: str, check: str, run_id: str) -> list[dict[str, Any]]:
    found = dagster.graphql(CHECK_EXECUTIONS, {"assetKey": {"path": [asset]}, "checkName": check})[
        "assetCheckExecutions"
    ]
    return [e for e in found if e["runId"] == run_id]


def test_each_hour_shows_its_own_check_verdicts_over_graphql(
    dagster: Dagster, dagster_home: DagsterHome
) -> None:
    """What an hour's page and a check's partition view read after a range run with a bad hour."""
    from cz_pipeline.lib.hours import HOUR, HourWindow, parse_partition_key
    from cz_pipeline.lib.synthetic import write_to_postgres
    from cz_pipeline_tests.pipeline_runs import execute, fetch_one

    litellm = dagster_home.database_url  # LiteLLM's tables beside Dagster's, in one database
    first, last = parse_partition_key(HOURS[0]), parse_partition_key(HOURS[-1])
    write_to_postgres(litellm, HourWindow(first, last + HOUR), 6, seed=7)
    bad = HOURS[1]
    (bad_id,) = fetch_one(
        litellm,
        f"""SELECT request_id FROM "LiteLLM_SpendLogs" WHERE "startTime" >= '{bad[:10]} {bad[11:]}'
        AND "startTime" < '{bad[:10]} {bad[11:]}'::timestamp + interval '1 hour'
        AND status = 'success' ORDER BY request_id LIMIT 1""",
    )
    execute(litellm, 'UPDATE "LiteLLM_SpendLogs" SET spend = -1 WHERE request_id = %s', (bad_id,))
    dagster_home.env.update(
        CZ_SOURCE="postgres", LITELLM_DATABASE_URL=litellm, CZ_UNPRICED_SHARE_THRESHOLD="1"
    )
    bad_range, clean_range = HOURS[:3], HOURS[3:]
    dg_launch(dagster_home, bad_range[0], bad_range[-1])
    dg_launch(dagster_home, clean_range[0], clean_range[-1])
    runs = dagster.graphql(BACKFILL_RUNS, {"filter": {}})["runsOrError"]["results"]
    by_start = {
        {t["key"]: t["value"] for t in r["tags"]}["dagster/asset_partition_range_start"]: r
        for r in runs
    }
    failed_run, clean_run = by_start[bad_range[0]], by_start[clean_range[0]]
    assert failed_run["status"] == "FAILURE", dagster.logs()
    assert clean_run["status"] == "SUCCESS", dagster.logs()

    # One verdict per hour and check, on the hour's partition; none planned and left skipped.
    for asset, names in PER_HOUR_CHECKS.items():
        for name in names:
            for run, hours in ((failed_run, bad_range), (clean_run, clean_range)):
                found = executions(dagster, asset, name, run["runId"])
                judged = hours if asset == "litellm_spend_logs" else [h for h in hours if h != bad]
                by_hour = {e["partition"]: e for e in found}
                assert len(by_hour) == len(found), found
                assert sorted(h for h, e in by_hour.items() if e["evaluation"]) == judged, found
                statuses = {e["status"] for e in found if e["evaluation"]}
                assert statuses <= {"SUCCEEDED", "FAILED"}, (asset, name, found)
                assert "SKIPPED" not in {e["status"] for e in found if e["partition"] in judged}

    verdicts = {
        e["partition"]: e
        for e in executions(dagster, "litellm_spend_logs", "hour_checks", failed_run["runId"])
    }
    assert verdicts[bad]["status"] == "FAILED"
    description = verdicts[bad]["evaluation"]["description"]
    assert description.startswith("spend_and_tokens_valid: ")
    assert "1 row with negative spend" in description
    entries = {m["label"]: m for m in verdicts[bad]["evaluation"]["metadataEntries"]}
    assert json.loads(entries["offending_request_ids"]["jsonString"]) == [bad_id]
    assert "| `spend_and_tokens_valid` | ERROR | failed |" in entries["rules"]["mdStr"]
    assert "| `required_fields` | ERROR | passed |" in entries["rules"]["mdStr"]
    assert {verdicts[h]["status"] for h in bad_range if h != bad} == {"SUCCEEDED"}

    # A check that could not judge (no complete UTC day in the run) is not a green pass.
    unjudged = executions(dagster, "litellm_spend_logs", "daily_reconciliation", clean_run["runId"])
    assert unjudged, "the check was planned"
    assert {e["status"] for e in unjudged} == {"SKIPPED"}
    assert all(e["evaluation"] is None for e in unjudged)
