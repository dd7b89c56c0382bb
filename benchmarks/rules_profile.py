"""Where the alert engine spends its time on a stream of `python -m benchmarks.rules`: py-spy
samples one run of `benchmarks/rules_timer.py` for an engine, and the timed loop's samples (not
the decoding, nor the untimed day in which baselines learn) are summarised as Markdown lines.

py-spy (`pip install -e .[profile]`) slows what it samples: its shares say where the time
goes, not how much there is; the µs per reading come from the unprofiled rounds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.ingest_profile import summary

ROOT = Path(__file__).resolve().parent.parent
_LINE = re.compile(r":\d+\)$")  # py-spy's line numbers: one entry per function, not per line
_ROOTS = re.compile(r" \(/[^()]*/(?=(ingest|devices|storage)/)")  # a checkout's path: relative
_COMPILED = re.compile(r" \([^()]*__native[^()]*\)$")


def profile(
    checkout: Path, data: Path, env: dict[str, str], native: bool, top: int = 10
) -> list[str]:
    """The top entries of the timed loop of one engine (the checkout) on one stream (the data).
    `native`: the engine is compiled, so its functions are C frames (py-spy --native)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    timer = [sys.executable, "-P", str(ROOT / "benchmarks" / "rules_timer.py"), str(data), "1"]
    record = [py_spy, "record", "--rate", "1000", "--format", "raw", *["--native"] * native]
    with tempfile.TemporaryDirectory(prefix="moclo-profile-rules-") as tmp:
        raw = Path(tmp) / "samples.txt"
        subprocess.run(
            [*record, "-o", str(raw), "--", *timer],
            env=dict(os.environ, PYTHONPATH=str(checkout), **env),
            check=True,
            capture_output=True,
        )
        stacks = []
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [_name(f) for f in stack.split(";")]
            # The timed loop calls evaluate from main itself; the learning day, from a list
            # comprehension.
            timed = any("AlertEngine" in f and "evaluate" in f for f in frames) and not any(
                "<listcomp>" in f for f in frames
            )
            if timed:
                stacks.append((frames, int(count)))
    return summary(stacks, top)


def _name(frame: str) -> str:
    """A frame as the summary shows it: no line numbers, no checkout's path; a compiled
    function (`CPyDef_conditions___baseline_judge…`, in mypyc's C file) under ingest/alerts."""
    return _COMPILED.sub(" (ingest/alerts, compiled)", _ROOTS.sub(" (", _LINE.sub(")", frame)))
