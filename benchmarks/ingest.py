"""How fast moclo ingest drains a backlog, and what it costs, against three other writers:
(a) a bare paho subscriber that only counts, (b) a lean hand-written consumer (paho, orjson,
line protocol, 5,000-line batches), (d) Node-RED with node-red-contrib-influxdb, and against
InfluxDB's own rate for the same lines ("raw", ingest_raw.py); then ingest's latency at a fixed
rate (ingest_latency.py), several ingests in a share group (ingest_scale.py) and its memory
(ingest_memory.py).

    .venv/bin/python -m benchmarks.ingest            # writes benchmarks/results/ingest.md
    .venv/bin/python -m benchmarks.ingest --short --out -   # a few thousand readings, printed
    .venv/bin/python -m benchmarks.ingest --sections latency,scale --out -

One Mosquitto and one InfluxDB are started here (moclo/stack.py). For each round, each message
shape (--readings single readings, default 100,000; --batched-readings in arrays of 50 readings
of one device, default 1,000,000; cow trackers alone, --cows of them, both ways, ingest starting
from baselines learnt on a day of their readings: ingest_cows.py) and each writer, in one run
and on the same readings: a persistent session, the backlog queued for it, the writer started as
a process of its own and timed until InfluxDB holds every reading exactly once (ingest_round.py
says how it is timed and checked); before the writers, InfluxDB's raw rate for the same lines
(ingest_raw.py). The writers' order rotates from round to round. The other sections (--sections)
share the servers; the memory section's outage starts servers of its own
(tests/faults_harness.py). Node-RED is installed from npm into a cache folder on first use
(ingest_nodered.py), unless --no-install, which leaves it out if it is not there. --json also
writes the raw figures. --short runs the throughput, latency and scale sections small (the
memory section needs minutes; name it in --sections to run it anyway).
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

from benchmarks import ingest_memory, ingest_nodered
from benchmarks.alerts_stack import local_servers
from benchmarks.ingest_contenders import CONTENDERS, baseline, known_types
from benchmarks.ingest_cows import cow_shapes
from benchmarks.ingest_data import Shape, batched, single
from benchmarks.ingest_latency import measure as measure_latency
from benchmarks.ingest_raw import bodies, raw_round
from benchmarks.ingest_report import Figures, report
from benchmarks.ingest_round import Stack, run_round
from benchmarks.ingest_scale import MEMBERS, scale_out
from benchmarks.machine import machine, server_versions, write_results

BATCH = 50  # readings per message in the batched shape
SECTIONS = ("throughput", "latency", "scale", "memory")


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


def throughput(
    stack: Stack, shapes: list[Shape], keys: list[str], rounds: int
) -> list[dict[str, Any]]:
    """Each round, each shape: InfluxDB's raw rate, then each writer's drain (order rotating)."""
    lines: dict[str, list[bytes]] = {}
    for shape in shapes:
        began = time.monotonic()
        lines[shape.name] = bodies(shape)
        progress(f"{shape.name}: lines formatted for raw in {time.monotonic() - began:.0f} s")
    rows: list[dict[str, Any]] = []
    for r in range(1, rounds + 1):
        order = keys[(r - 1) % len(keys) :] + keys[: (r - 1) % len(keys)]
        for shape in shapes:
            progress(f"round {r}, {shape.name}: raw {' '.join(order)}")
            load = os.getloadavg()[0]
            row = raw_round(stack.servers, shape, lines[shape.name], f"ib-raw-{shape.name}-{r}")
            rows.append(row | {"round": r, "load": load})
            progress(f"    (raw) {row['per_s']:,.0f} readings/s")
            for key in order:
                name = f"ib-{key}-{shape.name}-{r}"
                row = run_round(stack, CONTENDERS[key], shape, name, progress)
                rows.append(row | {"round": r})
                progress(f"    ({key}) {_summary(row)}")
    return rows


def run(args: argparse.Namespace, command: str) -> Figures:
    types = None  # every type; with a baseline, only those both commits know
    if args.baseline is not None:
        CONTENDERS["p"] = baseline(args.baseline)
        args.contenders = [*args.contenders, "p"]
        types = known_types(args.baseline)
    keys: list[str] = list(dict.fromkeys(args.contenders))
    sections: list[str] = args.sections
    install_s = None
    if "throughput" not in sections:
        keys = []
    if "d" in keys:
        if args.no_install and not ingest_nodered.installed():
            progress(f"Node-RED is not in {ingest_nodered.cache_dir()}: (d) left out")
            keys.remove("d")
        else:
            install_s = ingest_nodered.install(progress)
    began = time.monotonic()
    figures: Figures = {"rounds": []}
    minutes: dict[str, float] = {}
    single_shape = None
    if {"throughput", "scale"} & set(sections):
        progress(f"{args.readings:,} single readings…")
        single_shape = single(args.readings, seed=args.seed, types=types)
    with (
        tempfile.TemporaryDirectory(prefix="moclo-bench-ingest-") as tmp,
        local_servers(Path(tmp)) as servers,
    ):
        # local_servers runs Mosquitto in <workdir>/mosquitto, logging to mosquitto.log there.
        stack = Stack(servers, Path(tmp) / "mosquitto" / "mosquitto.log")
        if "throughput" in sections and single_shape is not None:
            at = time.monotonic()
            progress(f"throughput: {args.batched_readings:,} readings in arrays of {BATCH}…")
            shapes = [single_shape, batched(args.batched_readings, seed=args.seed, types=types)]
            if args.cows:
                progress(f"throughput: {args.cows:,} cows, day one judged to learn baselines…")
                shapes += cow_shapes(args.cows, args.readings, seed=args.seed)
            figures["rounds"] = throughput(stack, shapes, keys, args.rounds)
            del shapes
            minutes["throughput"] = (time.monotonic() - at) / 60
        if "latency" in sections:
            at = time.monotonic()
            progress("latency…")
            figures["latency"] = measure_latency(servers, short=args.short, progress=progress)
            minutes["latency"] = (time.monotonic() - at) / 60
        if "scale" in sections and single_shape is not None:
            at = time.monotonic()
            sizes = (2,) if args.short else MEMBERS
            progress(
                f"scale-out: {args.readings:,} readings, {', '.join(map(str, sizes))} members…"
            )
            figures["scale"] = scale_out(stack, single_shape, 1, sizes, progress)
            minutes["scale"] = (time.monotonic() - at) / 60
        if "memory" in sections:
            at = time.monotonic()
            small, large = (2_000, 20_000) if args.short else (100_000, 1_000_000)
            progress(f"memory: flat from {small:,} to {large:,} queued readings…")
            flat = ingest_memory.flat(servers, small, large, args.seed, progress)
            progress("memory: a 30 s InfluxDB outage in a 2,000 readings/s stream, and without…")
            outage = ingest_memory.outage(Path(tmp) / "memory", rate=2_000, outage_s=30)
            figures["memory"] = {"flat": flat, "outage": outage}
            minutes["memory"] = (time.monotonic() - at) / 60
    return figures | {
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
            "batched_readings": args.batched_readings,
            "batch": BATCH,
            "cows": args.cows,
            "sections": sections,
            "section_minutes": minutes,
            "rounds_asked": args.rounds,
            "seed": args.seed,
            "contenders": keys,
            "minutes": (time.monotonic() - began) / 60,
            "node_red_install_s": install_s,
            "loads": os.getloadavg(),
        },
        "profile": args.profile.read_text() if args.profile else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ingest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--short", action="store_true", help="3,000 readings, one round (CI)")
    parser.add_argument(
        "--sections",
        default=None,
        help=f"comma list of {', '.join(SECTIONS)} (default all; --short: all but memory)",
    )
    parser.add_argument("--readings", type=int, help="single shape (default 100,000)")
    parser.add_argument(
        "--batched-readings", type=int, help=f"arrays of {BATCH} (default 1,000,000)"
    )
    parser.add_argument("--rounds", type=int, help="default 3")
    parser.add_argument(
        "--cows",
        type=int,
        help="cow trackers of the cow-only shapes (default 3,000; --short 100; 0: leave them out)",
    )
    parser.add_argument("--contenders", default="abcd", help="any of a, b, c, d (default abcd)")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also run (p): moclo ingest from the checkout DIR of another commit, for a "
        "same-run comparison (git worktree add DIR COMMIT; e.g. --contenders c --baseline DIR)",
    )
    parser.add_argument("--no-install", action="store_true", help="skip (d) unless installed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/ingest.md", help="'-': print")
    parser.add_argument("--json", help="also write the raw figures to this file")
    parser.add_argument(
        "--profile",
        type=Path,
        help="a profile made by `python -m benchmarks.ingest_profile`, embedded in the report",
    )
    args = parser.parse_args(argv)
    if args.readings is None:
        args.readings = 3_000 if args.short else 100_000
    if args.batched_readings is None:
        args.batched_readings = 3_000 if args.short else 1_000_000
    if args.sections is None:
        args.sections = ",".join(SECTIONS[:3] if args.short else SECTIONS)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if unknown_sections := set(args.sections) - set(SECTIONS):
        parser.error(f"unknown sections {', '.join(sorted(unknown_sections))}: {SECTIONS}")
    if args.rounds is None:
        args.rounds = 1 if args.short else 3
    if args.cows is None:
        args.cows = 100 if args.short else 3_000
    if args.baseline is not None and not (args.baseline / "moclo" / "cli.py").is_file():
        parser.error(f"--baseline {args.baseline}: not a moclo checkout (no moclo/cli.py)")
    if unknown := set(args.contenders) - set(CONTENDERS):
        parser.error(f"unknown contenders {''.join(sorted(unknown))}: choose from abcd")
    if args.batched_readings % BATCH:
        parser.error(f"--batched-readings must be a multiple of {BATCH}")

    given = argv if argv is not None else sys.argv[1:]
    figures = run(args, " ".join(["python -m benchmarks.ingest", *given]))
    write_results(figures, report(figures), out=args.out, json_path=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
