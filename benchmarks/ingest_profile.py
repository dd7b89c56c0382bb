"""Where moclo ingest spends its CPU in each shape of the ingest benchmark: py-spy samples every
process of a one-round throughput run with moclo ingest alone, and the top entries of each timed
ingest are written as Markdown (embedded in benchmarks/results/ingest.md with --profile).

    .venv/bin/python -m benchmarks.ingest_profile --out /tmp/profile.md
    .venv/bin/python -m benchmarks.ingest --profile /tmp/profile.md

py-spy (`pip install -e .[profile]`, a development tool) slows what it samples, so
the profile is a run of its own: its rates are not the benchmark's. Each shape starts two
ingest processes, one to create the session and then the timed one: the timed ones are the four
with the most samples, in the order of their process ids (which increase within a run).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.ingest_contenders import ROOT

SHAPES = ("single", "batched", "cows-single", "cows-batched")  # the order the harness runs them
SITE = re.compile(r" \([^()]*site-packages/")  # library frames: keep the path below it
OURS = ("ingest/", "devices/", "storage/", "core/")


def record(out: Path, args: argparse.Namespace) -> str:
    """Runs the harness under py-spy; returns its command line."""
    harness = [
        *(sys.executable, "-m", "benchmarks.ingest", "--contenders", "c"),
        *("--sections", "throughput", "--rounds", "1", "--out", "-"),
        *("--readings", str(args.readings), "--batched-readings", str(args.batched_readings)),
        *("--cows", str(args.cows)),
    ]
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [py_spy, "record", "--subprocesses", "--nonblocking", "--rate", "200"]
    command += ["--format", "raw", "-o", str(out), "--", *harness]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return " ".join(["py-spy record --subprocesses --rate 200 --", "python", *harness[1:]])


def by_process(raw: Path) -> dict[int, list[tuple[list[str], int]]]:
    """Each `moclo ingest` process's stacks (outermost first) with their sample counts."""
    out: dict[int, list[tuple[list[str], int]]] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        # Imports at start-up are left out: they are the same at any size of backlog.
        if len(frames) < 3 or "moclo ingest" not in frames[1] or "importlib._bootstrap" in stack:
            continue
        pid = int(frames[1].split(":")[0].removeprefix("process "))
        out.setdefault(pid, []).append(([SITE.sub(" (", f) for f in frames[2:]], int(count)))
    return out


def summary(stacks: list[tuple[list[str], int]], top: int) -> list[str]:
    total = sum(n for _, n in stacks)
    own, inclusive = Counter[str](), Counter[str]()
    for frames, n in stacks:
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total:,} samples. Own time (the frame itself), top {top}:", ""]
    lines += [f"    {100 * n / total:5.1f} %  {f}" for f, n in own.most_common(top)]
    lines += ["", "Inclusive (with what it calls), our code and its libraries' entry points:", ""]
    ours = [(f, n) for f, n in inclusive.most_common() if any(p in f for p in OURS)]
    lines += [f"    {100 * n / total:5.1f} %  {f}" for f, n in ours[:top]]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ingest_profile",
        description=__doc__.split("\n\n")[0],
        epilog="example: python -m benchmarks.ingest_profile --cows 2000 --out /tmp/profile.md",
    )
    parser.add_argument("--readings", type=int, default=50_000)
    parser.add_argument("--batched-readings", type=int, default=300_000)
    parser.add_argument("--cows", type=int, default=2_000)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", default="-", help="a Markdown file, or '-' to print")
    parser.add_argument("--samples", type=Path, help="keep py-spy's raw samples in this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="moclo-profile-") as tmp:
        raw = args.samples or Path(tmp) / "samples.txt"
        command = record(raw, args)
        processes = by_process(raw)
    # Per shape, the timed ingest is the one with thousands of samples (the one that makes the
    # session stops at once); process ids give their order.
    samples = {pid: sum(n for _, n in stacks) for pid, stacks in processes.items()}
    timed = sorted(sorted(samples, key=samples.__getitem__)[-len(SHAPES) :])
    if len(timed) != len(SHAPES):
        raise SystemExit(f"expected {2 * len(SHAPES)} ingest processes, found {len(processes)}")
    text = [f"    {command}", "", "(Imports at start-up left out.)", ""]
    for shape, pid in zip(SHAPES, timed, strict=True):
        text += [f"#### {shape}", "", *summary(processes[pid], args.top), ""]
    markdown = "\n".join(text)
    if args.out == "-":
        print(markdown)
    else:
        Path(args.out).write_text(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
