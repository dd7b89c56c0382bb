"""What a benchmark ran on, for its results file (cores, CPU, memory, Python, kernel, the
servers' versions), and writing that file."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from moclo.stack import find_executable


def machine() -> str:
    """E.g. "2 cores (AMD EPYC), 24 GiB, Python 3.11.7, Linux 6.18"."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory_kb / 1024**2:.0f} GiB, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def _version(name: str, package: str, flag: str) -> str:
    """The first line a server prints about its version, e.g. "mosquitto version 2.0.11"."""
    command = [find_executable(name, package=package), flag]
    done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    return next((ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()), name)


def server_versions() -> str:
    """The broker's and the database's versions, e.g. "mosquitto version 2.0.11 and InfluxDB
    v1.6.7 (git: unknown unknown)"."""
    return " and ".join(
        _version(*v) for v in (("mosquitto", "mosquitto", "-h"), ("influxd", "influxdb", "version"))
    )


def write_results(figures: dict[str, Any], text: str, *, out: str, json_path: str | None) -> None:
    """The report to `out` (`-`: stdout), and the raw figures as JSON to `json_path` if given."""
    if json_path:
        Path(json_path).write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    if out == "-":
        print(text)
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
        print(f"wrote {out}", file=sys.stderr)
