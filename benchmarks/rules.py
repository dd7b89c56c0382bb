"""What judging the default alert rules costs per reading: the alert engine alone, no broker,
no database, on two streams: the ingest benchmark's mix of every device type, and cow trackers
alone (the seed's main device, five rules, two of them baselines).

    .venv/bin/python -m benchmarks.rules                      # this checkout, printed
    .venv/bin/python -m benchmarks.rules --baseline /tmp/old --out benchmarks/results/rules.md
    .venv/bin/python -m benchmarks.rules --cows 500 --mix 50000 --rounds 3 --memory-cows 0
    .venv/bin/python -m benchmarks.rules --baseline /tmp/old --profile     # and where time goes

Each stream covers two days of reading time (`benchmarks/alerts_throughput.py`'s fleet, seed
1, a fixed end): the first day is judged untimed so that baselines are learnt, the second is
timed (`benchmarks/rules_timer.py`, a process per engine). With --baseline, both engines run
in the same invocation, rounds interleaved, on the same readings; the report gives µs per
reading (median of rounds), the ratio, and whether both engines' alert changes are
byte-identical (SHA-256 of the `moclo_alerts` lines they would store).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.alerts_stack import DAY
from benchmarks.alerts_throughput import mixed_readings
from benchmarks.machine import machine
from benchmarks.rules_profile import profile
from ingest.alerts.compiled import build_folder

ROOT = Path(__file__).resolve().parent.parent
END = 1_790_000_000.0  # a fixed end of reading time: the same readings in every run
READINGS_PER_COW = 2 * DAY / 600


def streams(mix: int, cows: int) -> dict[str, tuple[list[tuple[str, bytes]], int, int]]:
    """name → (messages, learn until ns, wall ns)."""
    learn_until, wall = int((END - DAY) * 1e9), int(END * 1e9)
    cow_readings = int(cows * READINGS_PER_COW / 1.1)  # the fleet makes 10 % more devices
    only_cows = frozenset({"cow_tracker"})
    return {
        "mix": (mixed_readings(mix, seed=1, end=END), learn_until, wall),
        "cows": (mixed_readings(cow_readings, seed=1, end=END, types=only_cows), learn_until, wall),
    }


# name → (checkout, environment): with a compiled build of this checkout's engine, its Python
# sources are timed as well (`ingest/alerts/compiled.py`).
Engines = dict[str, tuple[Path, dict[str, str]]]
PURE = {"MOCLO_PURE_PYTHON": "1"}


def time_engine(checkout: Path, data: Path, rounds: int, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-P", str(ROOT / "benchmarks" / "rules_timer.py"), str(data), str(rounds)],
        env=dict(os.environ, PYTHONPATH=str(checkout), **env),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"the engine of {checkout} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def measure(args: argparse.Namespace) -> dict[str, dict[str, dict[str, Any]]]:
    engines: Engines = {"this": (ROOT, {})}
    if (build_folder() / "ingest" / "alerts").is_dir():
        engines["this as Python"] = (ROOT, PURE)
    if args.baseline:
        engines["baseline"] = (args.baseline, {})
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="moclo-bench-rules-") as tmp:
        for name, stream in streams(args.mix, args.cows).items():
            data = Path(tmp) / f"{name}.pickle"
            data.write_bytes(pickle.dumps(stream))
            runs: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
            for _ in range(args.rounds):  # interleaved, so both see the same load
                for engine, (checkout, env) in engines.items():
                    runs[engine].append(time_engine(checkout, data, 1, env))
            results[name] = {
                engine: got[0] | {"seconds": [s for g in got for s in g["seconds"]]}
                for engine, got in runs.items()
            }
            if args.profile:  # after the timed rounds: py-spy slows what it samples
                for engine, (checkout, env) in engines.items():
                    native = results[name][engine]["engine"] == "compiled"
                    results[name][engine]["profile"] = profile(checkout, data, env, native)
    if args.memory_cows:
        results["memory"] = {
            engine: memory(checkout, args.memory_cows, env)
            for engine, (checkout, env) in engines.items()
        }
    return results


def memory(checkout: Path, cows: int, env: dict[str, str]) -> dict[str, Any]:
    """What one cow's rule state costs in this engine (`benchmarks/rules_memory.py`)."""
    script = ROOT / "benchmarks" / "rules_memory.py"
    done = subprocess.run(
        [sys.executable, "-P", str(script), "--cows", str(cows)],
        env=dict(os.environ, PYTHONPATH=str(checkout), **env),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"measuring the memory of {checkout}'s engine failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def report(
    results: dict[str, dict[str, dict[str, Any]]], baseline: Path | None, before: float
) -> str:
    head = "| stream | engine | readings timed | µs per reading (median) | rounds | alert changes"
    rows = [head + " | SHA-256 of moclo_alerts |", "|---|---|---:|---:|---|---:|---|"]
    notes = []
    memory_rows = _memory_rows(results.pop("memory", {}))
    for stream, engines in results.items():
        us = {}
        for engine, r in engines.items():
            us[engine] = statistics.median(r["seconds"]) / r["readings"] * 1e6
            each = ", ".join(f"{s / r['readings'] * 1e6:.2f}" for s in r["seconds"])
            rows.append(
                f"| {stream} | {engine}{' (compiled)' * (r['engine'] == 'compiled')} | "
                f"{r['readings']:,} | "
                f"{us[engine]:.2f} | {each} | "
                f"{r['changes']:,} | `{r['digest'][:16]}` |"
            )
        for engine in [e for e in engines if e != "baseline" and "baseline" in engines]:
            same = engines[engine]["digest"] == engines["baseline"]["digest"]
            ratio = us[engine] / us["baseline"]
            # (a baseline that is compiled can be faster than this checkout's Python sources)
            speed = f"{1 / ratio:.1f}× faster" if ratio <= 1 else f"{ratio:.1f}× slower"
            notes.append(
                f"- {stream}: {engine} / baseline = {ratio:.2f} ({speed}); alert changes "
                f"{'byte-identical' if same else 'DIFFER'}"
            )
    where = f"baseline: {baseline}" if baseline else "no baseline"
    load = f"load average (1 min) before: {before:.2f}, after: {os.getloadavg()[0]:.2f}"
    lines = [*rows, "", f"{load}; {where}", *notes, *memory_rows]
    for stream, engines in results.items():
        for engine, r in engines.items():
            if "profile" in r:
                lines += ["", f"#### Profile: {stream}, {engine} (the timed loop)", ""]
                lines += r["profile"]
    return "\n".join(lines)


def _memory_rows(memory: dict[str, dict[str, Any]]) -> list[str]:
    if not memory:
        return []
    some = next(iter(memory.values()))
    rows = [
        "",
        f"What one cow's rule state costs: {some['cows']:,} cows judged for a day (their baselines"
        " learnt a day of hours), the engine's memory as tracemalloc counts it, per cow"
        " (`benchmarks/rules_memory.py`):",
        "",
        "| engine | bytes per cow | all cows, MB |",
        "|---|---:|---:|",
    ]
    for engine, m in memory.items():
        name = f"{engine}{' (compiled)' * (m['engine'] == 'compiled')}"
        rows.append(f"| {name} | {m['bytes_per_cow']:,} | {m['traced_bytes'] / 1e6:.1f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.rules",
        description=__doc__.split("\n\n")[0],
        epilog="example: python -m benchmarks.rules --baseline /tmp/moclo-main --rounds 5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--mix", type=int, default=200_000, help="readings of the mix")
    parser.add_argument("--cows", type=int, default=2_000, help="cow trackers (288 readings each)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--memory-cows",
        type=int,
        default=3_000,
        metavar="N",
        help="also measure each engine's rule state per cow over N cows (0: do not)",
    )
    parser.add_argument(
        "--baseline", type=Path, metavar="DIR", help="a checkout of another commit (git worktree)"
    )
    parser.add_argument("--out", default="-", help="a Markdown file, or '-' to print")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also sample each engine with py-spy (pip install -e .[profile]) and add the top "
        "entries of its timed loop",
    )
    args = parser.parse_args(argv)
    if args.baseline is not None and not (args.baseline / "ingest" / "alerts").is_dir():
        parser.error(f"--baseline {args.baseline}: not a moclo checkout (no ingest/alerts)")
    before = os.getloadavg()[0]  # the machine may be shared: its load is part of the result
    text = report(measure(args), args.baseline, before)
    if args.out == "-":
        print(text)
        return 0
    given = " ".join(argv if argv is not None else sys.argv[1:])
    Path(args.out).write_text(
        f"# Alert rules: the engine's CPU per reading\n\n    python -m benchmarks.rules {given}\n\n"
        f"{datetime.date.today()}, commit {_commit()}; {machine()}.\n\n"
        f"{__doc__.split(chr(10) * 2, 2)[2]}\n{text}\n"
    )
    return 0


def _commit() -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
