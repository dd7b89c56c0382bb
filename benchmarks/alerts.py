"""What alert rules cost: ingest throughput with the default rules against none, publish→alert
latency at 1,000 readings/s, and the alert engine's memory per device.

    .venv/bin/python -m benchmarks.alerts                  # writes benchmarks/results/alerts.md
    .venv/bin/python -m benchmarks.alerts --quick --out -  # a one-minute smoke run, printed

One Mosquitto and one InfluxDB are started here (moclo/stack.py). Each timed ingest runs in its
own process, as `moclo ingest` would, so rounds do not share a heap or an interpreter:

1. Throughput (alerts_throughput.py): N readings of every device type (simulators/, a
   fixed seed, two days of reading time with random episodes and devices going offline) wait
   at the broker for ingest's persistent session; ingest starts with IngestOptions' defaults
   and is timed until it has handled all of them. Rules on (every type's defaults) and off
   (`IngestOptions(alert_rules=False)`) alternate, a fresh database and session each round,
   and InfluxDB must then hold exactly N readings.
2. Latency (alerts_latency.py): ingest running, a publisher at a steady rate with real-time
   timestamps, and a known subset of devices crossing thresholds (fever cows, pacemakers in
   and out of tachycardia); for each expected alert, publish of the reading that completed the
   condition → the alert on `{prefix}/{tenant}/alerts/{device_id}`; and each periodic
   alert-state snapshot during the run, with the alerts in flight meanwhile.
3. Memory (alerts_memory.py): an `AlertEngine` in this process fed days of readings per device
   type, measured with tracemalloc after 2 and after 4 days; the snapshot's size and its
   dump/load times.

The report is alerts_report.py; --json also writes the raw figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson

from benchmarks.alerts_latency import latency, serve_live, variants
from benchmarks.alerts_memory import memory
from benchmarks.alerts_report import Figures, report
from benchmarks.alerts_stack import local_servers
from benchmarks.alerts_throughput import drain, throughput
from benchmarks.machine import machine, server_versions, write_results
from core.settings import Settings
from ingest.options import IngestOptions
from moclo.logs import configure_logging


def _child(mode: str, raw: str) -> None:
    """One timed ingest, in the process `child_command` started."""
    configure_logging()  # as `moclo ingest` does; stderr goes to a log file
    child = orjson.loads(raw)
    settings = Settings(**child["settings"])
    if mode == "drain":
        print(orjson.dumps(drain(settings, child["expected"], child["rules"])).decode())
    else:
        serve_live(settings, IngestOptions(**child["options"]))


def run(args: argparse.Namespace, command: str) -> Figures:
    """Every section; the figures `report` reads."""

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    load_at_start = os.getloadavg()[0]
    began = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="moclo-bench-alerts-") as tmp,
        local_servers(Path(tmp)) as servers,
    ):
        progress(f"throughput: {args.readings:,} readings, {args.rounds} rounds each…")
        rounds = throughput(servers, args.readings, args.rounds, args.seed, progress)
        lat = []
        plan = variants(args.rate, args.duration, args.warmup, args.alerting)
        for i, (load, asked) in enumerate(plan):
            progress(
                f"latency at {args.rate:,.0f}/s, linger_s={load.linger_s:g}, "
                f"snapshot every {load.snapshot_every_s:g} s…"
            )
            lat.append(latency(servers, load, f"live{i + 1}") | {"asked_every_s": asked})
            progress(f"  {lat[-1]}")
    progress(f"memory: {args.cows:,} cows and {args.others:,} others…")
    mem = [dataclasses.asdict(row) for row in memory(args.cows, args.others, progress)]
    servers_text = server_versions()
    settings = ("readings", "seed", "rate", "warmup", "duration", "alerting")
    return {
        "run": {
            "date": datetime.date.today().isoformat(),
            "machine": machine(),
            "servers": servers_text,
            "loads": [load_at_start, os.getloadavg()[0]],
            "command": command,
            "minutes": (time.monotonic() - began) / 60,
            **{name: getattr(args, name) for name in settings},
        },
        "throughput": rounds,
        "latency": lat,
        "memory": mem,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.alerts", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a one-minute smoke run")
    parser.add_argument("--readings", type=int, help="throughput: readings per round")
    parser.add_argument("--rounds", type=int, help="throughput: rounds of rules on and off")
    parser.add_argument("--rate", type=float, default=1_000.0, help="latency: readings/s")
    parser.add_argument("--duration", type=float, help="latency: seconds of alerting devices")
    parser.add_argument("--warmup", type=float, help="latency: seconds of background first")
    parser.add_argument("--alerting", type=int, default=20, help="latency: alerting cows/hearts")
    parser.add_argument("--cows", type=int, help="memory: cows")
    parser.add_argument("--others", type=int, help="memory: devices of the other seven types")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/alerts.md", help="'-': print")
    parser.add_argument("--json", help="also write the raw figures to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("child_args", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        _child(args.child, args.child_args)
        return 0

    quick = args.quick
    defaults = {
        "readings": 5_000 if quick else 50_000,
        "rounds": 1 if quick else 4,
        "duration": 8.0 if quick else 30.0,
        "warmup": 2.0 if quick else 10.0,
        "cows": 500 if quick else 10_000,
        "others": 500 if quick else 10_000,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)

    given = argv if argv is not None else sys.argv[1:]
    figures = run(args, " ".join(["python -m benchmarks.alerts", *given]))
    write_results(figures, report(figures), out=args.out, json_path=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
