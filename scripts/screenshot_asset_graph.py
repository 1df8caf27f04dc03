"""Take real screenshots of Dagster's UI for the README: the asset graph, an hour's check verdicts
and the CBF mapping (docs/asset_graph.png, docs/hour_checks.png, docs/cbf_mapping.png).

Run from anywhere, with the project's virtualenv and Chromium installed
(Debian/Ubuntu: ``apt-get install chromium``)::

    .venv/bin/python scripts/screenshot_asset_graph.py
    .venv/bin/python scripts/screenshot_asset_graph.py --days 2 --out-dir /tmp/shots --keep

It needs no database, no LiteLLM and no CloudZero account, and leaves the repository alone
apart from the PNGs:

1. A temporary ``DAGSTER_HOME`` with a local SQLite instance (telemetry off, and the UI's
   first-visit "Join the Dagster community" dialog off so that it does not cover the graph),
   synthetic LiteLLM traffic (``CZ_SOURCE=synthetic``), a temporary lake, and no CloudZero
   credentials, so uploads are dry runs.
2. ``cz-pipeline demo --days N`` materializes the last N UTC days, one run per day, so that
   the assets show their latest events and check results.
3. ``dagster-webserver`` serves the repository's workspace.yaml on 127.0.0.1 and a free port
   (no daemon: nothing runs while the pictures are taken), with the partitions starting where
   the demo's data starts (the ``demo.env`` the demo writes), as ``make ui`` does.
4. Headless Chromium opens each page, checks that the rendered page shows what the picture is
   for, and takes the screenshot: the global asset lineage (``/asset-groups``) with both groups
   expanded; the spend logs' ``hour_checks`` executions, one verdict per hour; the
   ``cloudzero_line_items`` overview, whose description holds the CBF mapping table.

``--keep`` leaves the temporary folder (instance, lake, logs) in place for a look.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from cz_pipeline.cli import DEMO_ENV_FILE

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ASSETS = ("litellm_spend_logs", "cloudzero_line_items", "cloudzero_billing_drops")
GROUPS = ("litellm", "cloudzero")
INSTANCE_YAML = """\
# Throwaway SQLite instance for scripts/screenshot_asset_graph.py.
telemetry:
  enabled: false
nux:
  enabled: false
"""
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environment(home: Path, lake: Path) -> dict[str, str]:
    """This shell's environment without Dagster, CloudZero and LiteLLM settings, plus ours."""
    foreign = ("DAGSTER_", "CZ_", "CLOUDZERO_", "LITELLM_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(foreign)}
    env.update(DAGSTER_HOME=str(home), CZ_SOURCE="synthetic", CZ_LAKE_URL=str(lake))
    return env


def demo_settings(home: Path) -> dict[str, str]:
    """What the demo wrote for the UI (``demo.env``: where its partitions start)."""
    lines = (home / DEMO_ENV_FILE).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def materialize(days: int, home: Path, env: Mapping[str, str], log: Path) -> None:
    print(f"materializing the last {days} UTC day(s) with `cz-pipeline demo` ...", flush=True)
    with log.open("wb") as out:
        result = subprocess.run(
            [str(BIN / "cz-pipeline"), "demo", "--days", str(days), "--home", str(home)],
            cwd=REPO,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise SystemExit(f"cz-pipeline demo failed; see {log}")


@contextlib.contextmanager
def webserver(env: Mapping[str, str], log: Path) -> Iterator[str]:
    """dagster-webserver on the repository's workspace.yaml, in its own process group."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(BIN / "dagster-webserver"),
                *("-h", "127.0.0.1", "-p", str(port), "-w", str(REPO / "workspace.yaml")),
            ],
            cwd=REPO,  # workspace.yaml says working_directory: .
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise SystemExit(f"dagster-webserver exited; see {log}")
            with (
                contextlib.suppress(urllib.error.URLError, ConnectionError),
                urllib.request.urlopen(f"{url}/server_info", timeout=5) as response,
            ):
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"dagster-webserver did not answer in 120 s; see {log}")
            time.sleep(0.5)
        print(f"dagster-webserver is up at {url}", flush=True)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever is left: the code server
        process.wait(timeout=10)


def find_chromium(explicit: str | None) -> str:
    for name in (explicit,) if explicit else CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("Chromium not found: apt-get install chromium, or pass --chromium PATH")


def chromium(
    browser: str, profile: Path, size: str, budget_ms: int, action: list[str], url: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            browser,
            *("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
            *("--disable-background-networking", "--disable-component-update"),
            *("--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}"),
            f"--window-size={size}",
            f"--virtual-time-budget={budget_ms}",
            *action,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=600,  # a loaded machine can take minutes to render a page
        check=False,
    )


def graph_url(base: str) -> str:
    """The global asset lineage with both groups open (the UI's ``expanded`` query parameter)."""
    expanded = ",".join(f"global@global:{group}" for group in GROUPS)
    return f"{base}/asset-groups?expanded={quote(expanded, safe='')}"


def check_url(base: str, asset: str, check: str) -> str:
    """A check's page: its latest evaluations, one row per hour with partition and verdict."""
    return f"{base}/assets/{asset}?view=checks&checkDetail={check}"


def overview_url(base: str, asset: str) -> str:
    return f"{base}/assets/{asset}?view=overview"


@dataclass(frozen=True)
class Shot:
    """One picture: the page, what it must show before it is taken, and the file name."""

    name: str
    url: str
    must_show: tuple[str, ...]


def shots(base: str, hour: str) -> list[Shot]:
    return [
        Shot("asset_graph.png", graph_url(base), (*ASSETS, "Asset checks")),
        Shot(
            "hour_checks.png",
            check_url(base, "litellm_spend_logs", "hour_checks"),
            ("hour_checks", hour),
        ),
        Shot(
            "cbf_mapping.png",
            overview_url(base, "cloudzero_line_items"),
            ("CBF column", "resource/id", "team_id"),
        ),
    ]


def screenshot(shot: Shot, out: Path, workdir: Path, browser: str, size: str) -> None:
    url = shot.url
    # The UI is a JavaScript app that renders after several GraphQL round trips: let it run
    # for a budget of virtual time, and look at the rendered DOM before trusting the picture;
    # on a slow machine, try again with more time.
    for attempt, budget_ms in enumerate((15_000, 30_000, 60_000), start=1):
        profile = workdir / f"chromium-profile-{out.stem}-{attempt}"
        dom = chromium(browser, profile, size, budget_ms, ["--dump-dom"], url).stdout
        missing = [text for text in shot.must_show if text not in dom]
        if missing:
            print(f"attempt {attempt}: the page does not show {missing} yet", flush=True)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            taken = chromium(browser, profile, size, budget_ms, [f"--screenshot={out}"], url)
        except subprocess.TimeoutExpired:
            print(f"attempt {attempt}: chromium took too long", flush=True)
            continue
        if taken.returncode == 0 and out.exists() and out.stat().st_size > 0:
            print(f"wrote {out} ({out.stat().st_size:,} bytes) from {url}")
            return
        print(f"attempt {attempt}: chromium failed: {taken.stderr[-2000:]}", flush=True)
    raise SystemExit(f"{url} never showed {shot.must_show}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, default=REPO / "docs")
    parser.add_argument("--days", type=int, default=1, help="UTC days to materialize first")
    parser.add_argument("--window-size", default="1600,1000", help="browser window, W,H")
    parser.add_argument("--chromium", help="the browser binary (default: found on PATH)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    browser = find_chromium(args.chromium)
    workdir = Path(tempfile.mkdtemp(prefix="cz-asset-graph-"))
    try:
        home = workdir / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(INSTANCE_YAML)
        env = environment(home, workdir / "lake")
        materialize(args.days, home, env, workdir / "demo.log")
        env |= demo_settings(home)
        # The demo's last hour: the check page lists the newest verdicts first.
        last_day = datetime.now(UTC).date() - timedelta(days=1)
        with webserver(env, workdir / "webserver.log") as base:
            for shot in shots(base, f"{last_day:%Y-%m-%d}-23:00"):
                out = (args.out_dir / shot.name).resolve()
                screenshot(shot, out, workdir, browser, args.window_size)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
