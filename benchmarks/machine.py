"""What a benchmark ran on, for its results file: cores, CPU, memory, Python, kernel."""

from __future__ import annotations

import os
import platform
from pathlib import Path


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
