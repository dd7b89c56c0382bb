"""What the read side costs: a week of one device at 5-minute means with a month of a
thousand devices stored, and the time from a reading to its alert in the dashboard's live feed.

    .venv/bin/python -m benchmarks.query                  # writes benchmarks/results/query.md
    .venv/bin/python -m benchmarks.query --quick --out -  # a one-minute smoke run, printed

One Mosquitto and one InfluxDB are started here (moclo/stack.py), their files in a temporary
folder (`--workdir`; the full run needs about 1 GB there):

1. Load (query_data.py, query_load.py): 1,000 thermostats × 30 days × one reading a minute
   (43.2M readings) in ingest's schema, then an exact count, then a restart of InfluxDB.
2. Queries (query_series.py): one device, the last 7 days at 5-minute means, one field and
   all fields, through raw InfluxQL, `query.series.run_series` and `moclo serve`'s
   `/api/series`; cold and warm; every answer checked against the generator.
3. Live feed (query_live.py): `moclo ingest`, `moclo serve`, `moclo simulate` (1,000
   readings/s) and the dashboard in headless Chromium; 50 fever alerts, each timed from the
   publish of the reading that raised it to the broker, an SSE client and the page.

The report is query_report.py; --json also writes the raw figures.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.alerts_stack import ROOT, BenchmarkFailed
from benchmarks.machine import machine, server_versions, write_results
from benchmarks.query_data import Fleet
from benchmarks.query_live import LiveLoad, live_latency
from benchmarks.query_load import count_points, load
from benchmarks.query_report import Figures, report, summary
from benchmarks.query_series import Paths, Window, extras, measure
from benchmarks.query_stack import Stack, serve, servers

DB = "history"


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def drop_caches() -> None:
    """Empties the kernel's page cache (root only), so the next reads come from the disk."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        raise BenchmarkFailed(f"--drop-caches needs root ({exc})") from None


def load_history(stack: Stack, fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    progress(
        f"load: {fleet.points:,} readings ({fleet.devices:,} devices × {fleet.days} days × "
        f"1,440), {args.writers} writers…"
    )
    minutes = max(1, args.batch_lines // fleet.devices)
    result = load(
        stack.influx_url, DB, fleet, writers=args.writers, minutes_per_batch=minutes,
        progress=progress,
    )  # fmt: skip
    progress(f"  {result.points:,} readings in {result.seconds:.0f} s: {result.per_s:,.0f}/s")
    began = time.monotonic()
    stored = count_points(stack.influx_url, DB, fleet)
    count_s = time.monotonic() - began
    if stored != fleet.points:
        raise BenchmarkFailed(f"InfluxDB holds {stored:,} readings, not {fleet.points:,}")
    disk = stack.disk_bytes()
    progress(f"  counted {stored:,} in {count_s:.1f} s; {disk / 1e6:,.0f} MB on disk; restart…")
    restart_s = stack.restart_influx()
    progress(f"  InfluxDB answered again after {restart_s:.1f} s; waiting until it is idle…")
    settled = stack.settle()
    progress(
        f"  {'idle' if settled['quiet'] else 'still busy'} after {settled['seconds']:.0f} s "
        f"({settled['cpu_s']:.0f} CPU seconds meanwhile)"
    )
    return {
        "points": result.points,
        "seconds": result.seconds,
        "per_s": result.per_s,
        "bytes": result.bytes,
        "batches": result.batches,
        "retries": result.retries,
        "writers": result.writers,
        "lines_per_batch": result.lines_per_batch,
        "stored": stored,
        "count_s": count_s,
        "disk_bytes": disk,
        "restart_s": restart_s,
        "settle": settled,
    }


def time_queries(stack: Stack, fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    window = Window.last_days(fleet, 7)
    progress(f"queries: {window.start} to {window.end} at 5-minute means…")
    with serve(stack, DB, "history") as served:

        async def run() -> dict[str, Any]:
            paths = Paths(stack.influx_url, DB, served.url, window, served.token)
            try:
                if args.drop_caches:
                    drop_caches()
                samples = await measure(
                    paths,
                    fleet,
                    cold_devices=args.cold,
                    warm_devices=args.warm_devices,
                    warm_rounds=args.warm_rounds,
                    seed=args.seed,
                    progress=progress,
                )
                pieces = await extras(paths, fleet, repeats=50)
            finally:
                await paths.close()
            rows = [
                {"path": path, "variant": variant, "phase": phase, **summary(ms)}
                for (path, variant, phase), ms in samples.ms.items()
            ]
            for row in rows:
                progress(
                    f"  {row['path']:8} {row['variant']:10} {row['phase']}: "
                    f"p50 {row['p50']:.1f} ms, p99 {row['p99']:.1f} ms, max {row['max']:.1f} ms"
                )
            return {
                "from": window.start,
                "to": window.end,
                "buckets": window.buckets,
                "cold_devices": args.cold,
                "warm_devices": args.warm_devices,
                "warm_rounds": args.warm_rounds,
                "dropped_caches": args.drop_caches,
                "rows": rows,
                "samples": {"|".join(k): v for k, v in samples.ms.items()},
                "extras": {
                    "lookup": summary(pieces["lookup"]),
                    "list_devices": summary(pieces["list_devices"]),
                    "to_json": summary(paths.to_json_ms),
                },
            }

        return asyncio.run(run())


def time_live(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    live_load = LiveLoad(
        alerts=args.alerts,
        spacing_s=args.spacing,
        background_devices=args.background,
        warmup_s=args.warmup,
    )
    progress(f"live feed: {args.alerts} alerts over {args.background:,} readings/s…")
    result = live_latency(stack, live_load, progress)
    delays = {place: summary(ms) for place, ms in result["delays_ms"].items()}
    for place, s in delays.items():
        progress(f"  {place}: p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms, max {s['max']:.1f} ms")
    measured = result["delays_ms"]
    return {
        **result,
        "spacing_s": args.spacing,
        "background_devices": args.background,
        "delays": delays,
        "sse_minus_mqtt": _differences(measured, "sse", "mqtt"),
        "readings_minus_sse": _differences(measured, "sse+readings", "sse"),
        "page_minus_readings": _differences(measured, "page", "sse+readings"),
    }


def _differences(delays: dict[str, list[float]], later: str, earlier: str) -> dict[str, float]:
    """Per alert, how much later it arrived at one place than at another."""
    return summary([a - b for a, b in zip(delays[later], delays[earlier], strict=True)])


def revision() -> str:
    """The commit measured, e.g. "de1e509", and whether tracked files differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
        return done.stdout.rstrip() if done.returncode == 0 else ""  # porcelain starts " M"

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    if not changed:
        return commit
    files = ", ".join(line[3:] for line in changed[:5])
    return f"{commit} with uncommitted changes to {files}{', …' if len(changed) > 5 else ''}"


def run(args: argparse.Namespace, command: str) -> Figures:
    loads = [os.getloadavg()[0]]
    began = time.monotonic()
    fleet = Fleet(args.devices, args.days, int(time.time()) // 60, tenants=args.tenants)
    figures: Figures = {}
    measured = revision()
    with (
        tempfile.TemporaryDirectory(prefix="moclo-bench-query-", dir=args.workdir) as tmp,
        servers(Path(tmp)) as stack,
    ):
        figures["load"] = load_history(stack, fleet, args)
        figures["series"] = time_queries(stack, fleet, args)
        if args.alerts:
            figures["live"] = time_live(stack, args)
    loads.append(os.getloadavg()[0])
    servers_text = server_versions()
    chromium = subprocess.run(
        ["/usr/bin/chromium", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    figures["run"] = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "servers": f"{servers_text}, {chromium or 'Chromium'}",
        "loads": loads,
        "command": command,
        "revision": measured,
        "minutes": (time.monotonic() - began) / 60,
        **{
            name: getattr(args, name)
            for name in ("devices", "days", "tenants", "writers", "batch_lines", "seed")
        },
    }
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.query",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--quick", action="store_true", help="a one-minute smoke run")
    history = parser.add_argument_group("the stored history")
    history.add_argument("--devices", type=int, help="thermostats (1000; --quick 100)")
    history.add_argument("--days", type=int, help="days of one reading a minute (30; --quick 8)")
    history.add_argument("--tenants", type=int, default=10, help="(10)")
    history.add_argument("--writers", type=int, default=2, help="concurrent /write requests (2)")
    history.add_argument("--batch-lines", type=int, default=10_000, help="lines per /write (10000)")
    queries = parser.add_argument_group("the queries")
    queries.add_argument("--cold", type=int, help="cold devices per path and variant (100; 10)")
    queries.add_argument("--warm-devices", type=int, default=5, help="(5)")
    queries.add_argument("--warm-rounds", type=int, help="rounds over the warm devices (20; 5)")
    queries.add_argument(
        "--drop-caches", action="store_true", help="empty the page cache before the cold pass"
    )
    live = parser.add_argument_group("the live feed")
    live.add_argument("--alerts", type=int, help="fever alerts; 0 skips the section (50; 10)")
    live.add_argument("--spacing", type=float, default=1.0, help="seconds between two alerts (1)")
    live.add_argument("--background", type=int, help="thermostats at 1/s (1000; 200)")
    live.add_argument("--warmup", type=float, help="seconds of background first (10; 3)")
    parser.add_argument("--seed", type=int, default=1, help="which devices are asked (1)")
    parser.add_argument(
        "--workdir", default=tempfile.gettempdir(), help="for the servers' files (system temp)"
    )
    parser.add_argument(
        "--out", default="benchmarks/results/query.md", help="'-': print (results/query.md)"
    )
    parser.add_argument("--json", help="also write the raw figures to this file")
    args = parser.parse_args(argv)

    quick = args.quick
    defaults = {
        "devices": 100 if quick else 1_000,
        "days": 8 if quick else 30,
        "cold": 10 if quick else 100,
        "warm_rounds": 5 if quick else 20,
        "alerts": 10 if quick else 50,
        "background": 200 if quick else 1_000,
        "warmup": 3.0 if quick else 10.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)

    given = argv if argv is not None else sys.argv[1:]
    figures = run(args, " ".join(["python -m benchmarks.query", *given]))
    write_results(figures, report(figures), out=args.out, json_path=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
