"""Take a real screenshot of the asset graph in Dagster's UI and save it as docs/asset_graph.png.

Run from anywhere, with the project's virtualenv and Chromium installed
(Debian/Ubuntu: ``apt-get install chromium``)::

    .venv/bin/python scripts/screenshot_asset_graph.py
    .venv/bin/python scripts/screenshot_asset_graph.py --days 2 --out /tmp/graph.png --keep

It needs no database, no LiteLLM and no CloudZero account, and leaves the repository alone
apart from the PNG:

1. A temporary ``DAGSTER_HOME`` with a local SQLite instance (telemetry off, and the UI's
   first-visit "Join the Dagster community" dialog off so that it does not cover the graph),
   synthetic LiteLLM traffic (``CZ_SOURCE=synthetic``), a temporary lake, and no CloudZero
   credentials, so uploads are dry runs.
2. ``cz-pipeline demo --days N`` materializes the last N UTC days, one run per day, so that
   the assets show their latest events and check results.
3. ``dagster-webserver`` serves the repository's workspace.yaml on 127.0.0.1 and a free port
   (no daemon: nothing runs while the picture is taken).
4. Headless Chromium opens the global asset lineage (``/asset-groups``) with both groups
   expanded, checks that the rendered page shows the three assets and their checks, and
   takes the screenshot.

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
from pathlib import Path
from urllib.parse import quote

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
        timeout=180,
        check=False,
    )


def graph_url(base: str) -> str:
    """The global asset lineage with both groups open (the UI's ``expanded`` query parameter)."""
    expanded = ",".join(f"global@global:{group}" for group in GROUPS)
    return f"{base}/asset-groups?expanded={quote(expanded, safe='')}"


def missing_from_page(dom: str) -> list[str]:
    """What the rendered graph lacks: an asset node, or the nodes' check summaries."""
    return [text for text in (*ASSETS, "Asset checks") if text not in dom]


def screenshot(base: str, out: Path, workdir: Path, browser: str, size: str) -> None:
    url = graph_url(base)
    # The UI is a JavaScript app that lays the graph out after several GraphQL round trips:
    # let it run for a budget of virtual time, and look at the rendered DOM before trusting
    # the picture; on a slow machine, try again with more time.
    for attempt, budget_ms in enumerate((15_000, 30_000, 60_000), start=1):
        profile = workdir / f"chromium-profile-{attempt}"
        dom = chromium(browser, profile, size, budget_ms, ["--dump-dom"], url).stdout
        missing = missing_from_page(dom)
        if missing:
            print(f"attempt {attempt}: the page does not show {missing} yet", flush=True)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        taken = chromium(browser, profile, size, budget_ms, [f"--screenshot={out}"], url)
        if taken.returncode == 0 and out.exists() and out.stat().st_size > 0:
            print(f"wrote {out} ({out.stat().st_size:,} bytes) from {url}")
            return
        print(f"attempt {attempt}: chromium failed: {taken.stderr[-2000:]}", flush=True)
    raise SystemExit(f"the asset graph never rendered at {url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "asset_graph.png")
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
        with webserver(env, workdir / "webserver.log") as base:
            screenshot(base, args.out.resolve(), workdir, browser, args.window_size)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
