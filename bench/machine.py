"""What the benchmark ran on: enough to compare numbers between machines and runs."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.database import server_version


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _psql_version() -> str:
    result = subprocess.run(["psql", "--version"], capture_output=True, text=True, check=False)
    return result.stdout.strip()


def describe(database_url: str) -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "memory_gib": round(_memory_gib(), 1),
        "kernel": platform.release(),
        "postgresql": server_version(database_url),
        "psql": _psql_version(),
        "python": sys.version.split()[0],
        "pyarrow": _version("pyarrow"),
        "adbc_driver_postgresql": _version("adbc-driver-postgresql"),
        "adbc_driver_manager": _version("adbc-driver-manager"),
        "numpy": _version("numpy"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def describe_markdown(machine: dict[str, Any]) -> str:
    return (
        f"- {machine['nproc']} cores (`nproc`), {machine['cpu']}, "
        f"{machine['memory_gib']} GiB RAM, Linux {machine['kernel']}, "
        f"load average at start {', '.join(str(x) for x in machine['load_average_at_start'])}\n"
        f"- {machine['postgresql']}; {machine['psql']}\n"
        f"- Python {machine['python']}, pyarrow {machine['pyarrow']}, "
        f"adbc-driver-postgresql {machine['adbc_driver_postgresql']} "
        f"(driver manager {machine['adbc_driver_manager']}), numpy {machine['numpy']}"
    )
