"""CPU time and peak memory of a running process, from /proc (Linux), the same way for every
contender of the ingest benchmark, whatever its language."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")  # usually 100: CPU times have 10 ms resolution


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of `pid`, plus cutime + cstime of its children that it waited for."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which is in parentheses and may contain spaces: the
    # 12th..15th of those are utime, stime, cutime, cstime.
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / _TICKS


def peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM: the most resident memory `pid` has had. Read it before the process exits (a zombie
    has none)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmHWM")) / 1024
