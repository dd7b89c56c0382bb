"""What decoding, validating and formatting a reading costs: ingest's decoder and line formatter
alone, no broker, no database, on the rules benchmark's streams (every device type, and cow
trackers alone), one reading per message and in arrays of 50.

    .venv/bin/python -m benchmarks.decode --baseline /tmp/old --rounds 5

Each stream is `benchmarks/rules.py`'s (seed 1, a fixed end); the arrays are each device's
readings in runs of 50. With --baseline, both checkouts run in the same invocation, rounds
interleaved, on the same messages (`benchmarks/decode_timer.py`, a process per checkout); the
report gives µs of CPU per reading (median of rounds), decoding alone and with line
formatting, the ratio, and whether both keep the same lines and rejections (SHA-256).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.rules import ROOT, streams

ARRAY = 50


def shapes(mix: int, cows: int) -> dict[str, tuple[list[tuple[str, bytes]], int]]:
    """name → (messages with the "p/" prefix, wall ns): each stream single and in arrays."""
    out = {}
    for name, (messages, _learn, wall) in streams(mix, cows).items():
        single = [(f"p/{topic}", payload) for topic, payload in messages]
        by_device: dict[str, list[bytes]] = defaultdict(list)
        for topic, payload in single:
            by_device[topic].append(payload)
        arrays = [
            (topic, b"[" + b",".join(payloads[i : i + ARRAY]) + b"]")
            for topic, payloads in by_device.items()
            for i in range(0, len(payloads), ARRAY)
        ]
        out[f"{name}, single"] = (single, wall)
        out[f"{name}, arrays of {ARRAY}"] = (arrays, wall)
    return out


def time_decoder(checkout: Path, data: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-P", str(ROOT / "benchmarks" / "decode_timer.py"), str(data), "1"],
        env=dict(os.environ, PYTHONPATH=str(checkout)),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"the decoder of {checkout} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def measure(args: argparse.Namespace) -> dict[str, dict[str, list[dict[str, Any]]]]:
    checkouts = {"this": ROOT} | ({"baseline": args.baseline} if args.baseline else {})
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="moclo-bench-decode-") as tmp:
        for name, shape in shapes(args.mix, args.cows).items():
            data = Path(tmp) / "data.pickle"
            data.write_bytes(pickle.dumps(shape))
            results[name] = {c: [] for c in checkouts}
            for _ in range(args.rounds):  # interleaved, so both see the same load
                for checkout, path in checkouts.items():
                    results[name][checkout].append(time_decoder(path, data))
    return results


def report(results: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    rows = [
        "| shape | decoder | readings | µs decode (median) | µs decode + line | rounds (decode) "
        "| SHA-256 of lines and rejections |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    notes = []
    for shape, runs in results.items():
        us: dict[str, tuple[float, float]] = {}
        for checkout, got in runs.items():
            n = got[0]["readings"]
            decode = [r["decode"][0] / n * 1e6 for r in got]
            total = [r["total"][0] / n * 1e6 for r in got]
            us[checkout] = (statistics.median(decode), statistics.median(total))
            each = ", ".join(f"{u:.2f}" for u in decode)
            rows.append(
                f"| {shape} | {checkout} | {n:,} | {us[checkout][0]:.2f} | {us[checkout][1]:.2f} "
                f"| {each} | `{got[0]['digest'][:16]}` |"
            )
        if "baseline" in runs:
            same = runs["this"][0]["digest"] == runs["baseline"][0]["digest"]
            (d, t), (bd, bt) = us["this"], us["baseline"]
            notes.append(
                f"- {shape}: decode {bd / d:.2f}× faster, decode + line {bt / t:.2f}× faster; "
                f"lines and rejections {'identical' if same else 'DIFFER'}"
            )
    return "\n".join([*rows, "", f"load average after: {os.getloadavg()[0]:.2f}", *notes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.decode",
        description=__doc__.split("\n\n")[0],
        epilog="example: python -m benchmarks.decode --baseline /tmp/moclo-main --rounds 5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--mix", type=int, default=100_000, help="readings of the mix")
    parser.add_argument("--cows", type=int, default=1_000, help="cow trackers (288 readings each)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", type=Path, metavar="DIR", help="a checkout of another commit")
    args = parser.parse_args(argv)
    if args.baseline is not None and not (args.baseline / "ingest" / "decode.py").is_file():
        parser.error(f"--baseline {args.baseline}: not a moclo checkout (no ingest/decode.py)")
    print(report(measure(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
