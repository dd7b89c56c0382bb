"""How fast moclo ingest drains a backlog, and what it costs, against three other writers:
(a) a bare paho subscriber that only counts, (b) a lean hand-written consumer (paho, orjson,
line protocol, 5,000-line batches), (d) Node-RED with node-red-contrib-influxdb.

    .venv/bin/python -m benchmarks.ingest            # writes benchmarks/results/ingest.md
    .venv/bin/python -m benchmarks.ingest --short --out -   # a few thousand readings, printed

One Mosquitto and one InfluxDB are started here (moclo/stack.py). For each round, each message
shape (single readings; arrays of 50 readings of one device) and each writer, in one run and on
the same readings: a persistent session, the backlog queued for it, the writer started as a
process of its own and timed until InfluxDB holds every reading exactly once (ingest_round.py
says how it is timed and checked). The writers' order rotates from round to round. Node-RED is
installed from npm into a cache folder on first use (ingest_nodered.py), unless --no-install,
which leaves it out if it is not there. --json also writes the raw figures.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import ingest_nodered
from benchmarks.alerts_stack import local_servers
from benchmarks.ingest_contenders import CONTENDERS
from benchmarks.ingest_data import batched, single
from benchmarks.ingest_report import Figures, report
from benchmarks.ingest_round import Stack, run_round
from benchmarks.machine import machine, server_versions, write_results

BATCH = 50  # readings per message in the batched shape


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _node_version() -> str:
    done = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    return f"Node.js {done.stdout.strip() or 'not installed'}"


def _commit() -> str:
    """The commit ingest ran from, and whether ingest/ had changes on top of it."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "ingest", "devices"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{head or 'unknown'}{' with uncommitted changes to ingest/' if dirty else ''}"


def _summary(row: dict[str, Any]) -> str:
    rss = f"{row['peak_rss_mb']:.0f} MB peak RSS"
    if row["per_s"] is None:
        return f"all stored within one poll: too fast to time at this size; {rss}"
    return f"{row['per_s']:,.0f} readings/s, {row['cpu_ms_per_1000']:.0f} ms CPU per 1,000; {rss}"


def run(args: argparse.Namespace, command: str) -> Figures:
    keys: list[str] = list(dict.fromkeys(args.contenders))
    install_s = None
    if "d" in keys:
        if args.no_install and not ingest_nodered.installed():
            progress(f"Node-RED is not in {ingest_nodered.cache_dir()}: (d) left out")
            keys.remove("d")
        else:
            install_s = ingest_nodered.install(progress)
    began = time.monotonic()
    progress(f"{args.readings:,} readings, single and in arrays of {BATCH}…")
    shapes = [single(args.readings, seed=args.seed), batched(args.readings, seed=args.seed)]
    rounds: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="moclo-bench-ingest-") as tmp,
        local_servers(Path(tmp)) as servers,
    ):
        # local_servers runs Mosquitto in <workdir>/mosquitto, logging to mosquitto.log there.
        stack = Stack(servers, Path(tmp) / "mosquitto" / "mosquitto.log")
        for r in range(1, args.rounds + 1):
            order = keys[(r - 1) % len(keys) :] + keys[: (r - 1) % len(keys)]
            for shape in shapes:
                progress(f"round {r}, {shape.name}: {' '.join(order)}")
                for key in order:
                    name = f"ib-{key}-{shape.name}-{r}"
                    row = run_round(stack, CONTENDERS[key], shape, name, progress)
                    rounds.append(row | {"round": r})
                    progress(f"    ({key}) {_summary(row)}")
    return {
        "run": {
            "date": datetime.date.today().isoformat(),
            "machine": machine(),
            "servers": server_versions(),
            "node": _node_version()
            + (
                f", Node-RED {ingest_nodered.NODE_RED}, node-red-contrib-influxdb "
                f"{ingest_nodered.CONTRIB_INFLUXDB}"
                if "d" in keys
                else ""
            ),
            "command": command,
            "commit": _commit(),
            "readings": args.readings,
            "batch": BATCH,
            "rounds_asked": args.rounds,
            "seed": args.seed,
            "contenders": keys,
            "minutes": (time.monotonic() - began) / 60,
            "node_red_install_s": install_s,
            "loads": os.getloadavg(),
        },
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ingest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--short", action="store_true", help="3,000 readings, one round (CI)")
    parser.add_argument("--readings", type=int, help="per shape (default 100,000)")
    parser.add_argument("--rounds", type=int, help="default 3")
    parser.add_argument("--contenders", default="abcd", help="any of a, b, c, d (default abcd)")
    parser.add_argument("--no-install", action="store_true", help="skip (d) unless installed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/ingest.md", help="'-': print")
    parser.add_argument("--json", help="also write the raw figures to this file")
    args = parser.parse_args(argv)
    if args.readings is None:
        args.readings = 3_000 if args.short else 100_000
    if args.rounds is None:
        args.rounds = 1 if args.short else 3
    if unknown := set(args.contenders) - set(CONTENDERS):
        parser.error(f"unknown contenders {''.join(sorted(unknown))}: choose from abcd")
    if args.readings % BATCH:
        parser.error(f"--readings must be a multiple of {BATCH}")

    given = argv if argv is not None else sys.argv[1:]
    figures = run(args, " ".join(["python -m benchmarks.ingest", *given]))
    write_results(figures, report(figures), out=args.out, json_path=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
