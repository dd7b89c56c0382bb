"""Fault scenarios against real processes, long form: each scenario of `tests/faults_harness.py`
(ingest killed, InfluxDB down, broker restarted, hostile input) with 20,000 readings and a 30 s
outage, and the table of their exact counts recorded in benchmarks/results/faults.md.

    .venv/bin/python -m benchmarks.faults              # 20,000 readings, 30 s outage
    .venv/bin/python -m benchmarks.faults --readings 5000 --outage 5s --out -

Each scenario starts its own Mosquitto and InfluxDB (the same supervisor as `moclo up`) and runs
`moclo ingest` as a child process, exactly as a user would.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

from benchmarks.machine import machine
from core.durations import parse_duration
from tests.faults_harness import (
    Report,
    broker_restart,
    hostile_input,
    influx_outage,
    kill_ingest,
)


def table(reports: list[Report]) -> str:
    rows = [
        "| scenario | sent | stored | rejected | lost | duplicated | peak RSS of ingest | "
        "time | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in reports:
        rejected = f"{r.rejected}" + (f" of {r.hostile} hostile" if r.hostile else "")
        rows.append(
            f"| {r.scenario} | {r.sent} | {r.stored} | {rejected} | {r.lost} | "
            f"{r.duplicated} | {r.peak_rss_mb:.0f} MB | {r.seconds:.0f} s | "
            f"{'; '.join(r.notes)} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.faults", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--readings", type=int, default=20_000)
    parser.add_argument(
        "--outage",
        type=parse_duration,
        default=30.0,
        help="how long InfluxDB is down (default 30s)",
    )
    parser.add_argument("--rate", type=float, default=2_000, help="readings/s published")
    parser.add_argument(
        "--out",
        default="benchmarks/results/faults.md",
        help="where to write the results table ('-' for stdout)",
    )
    args = parser.parse_args(argv)
    reports = []
    with tempfile.TemporaryDirectory(prefix="moclo-faults-") as tmp:
        scenarios = [
            ("kill", lambda d: kill_ingest(d, readings_n=args.readings, kills=5, rate=args.rate)),
            (
                "outage",
                lambda d: influx_outage(
                    d, readings_n=args.readings, outage_s=args.outage, rate=args.rate
                ),
            ),
            ("broker", lambda d: broker_restart(d, readings_n=args.readings, rate=args.rate)),
            ("hostile", lambda d: hostile_input(d, readings_n=args.readings, rate=args.rate)),
        ]
        for name, scenario in scenarios:
            print(f"running {name}…", file=sys.stderr, flush=True)
            report = scenario(Path(tmp) / name)
            print(f"  {report}", file=sys.stderr, flush=True)
            reports.append(report)
    command = "python -m benchmarks.faults " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (
        f"# Fault scenarios\n\n{datetime.date.today().isoformat()}, on {machine()}.\n\n"
        f"Reproduce: `.venv/bin/{command.strip()}`\n\n{table(reports)}\n\n"
        "sent = valid readings acknowledged by the broker; stored = distinct readings in "
        "InfluxDB; lost = sent - stored; duplicated = points - distinct readings.\n"
    )
    if args.out == "-":
        print(text)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return (
        0
        if all(r.lost == 0 and r.duplicated == 0 and r.rejected_as_expected for r in reports)
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
