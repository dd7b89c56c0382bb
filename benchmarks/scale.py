"""Issue 19's benchmark: the engine's throughput with 1, 2 and 4 workers, CPU per reading of
its nodes and of the workers, one ingest on Mosquitto beside them, and worker failover times.

In one run, on one machine:

1. Throughput on the 3-node RabbitMQ cluster with 1, 2 and 4 `moclo ingest` workers: N cow
   readings are published over MQTT 3.1.1 by their devices at the three nodes (after one worker
   has declared the partitions and left), then the workers start together and drain them. Timed
   (20 ms polls) from the first worker consuming (its log) to all N stored. Engine CPU per
   reading = the three nodes' CPU (/proc) while the readings were published plus while they
   were drained, over N; worker CPU = all workers' CPU within the drain.
2. The same readings drained by one `moclo ingest` from Mosquitto (benchmarks/ingest_scale.py's
   round: a persistent session, the backlog, the drain), for comparison.
3. Failover, K times: two fresh workers run, each holding its share (worker 0 started first
   and stepped back from worker 1's partitions); worker 0 is killed with SIGKILL; each device,
   connected before, at once publishes its next reading; the time from the kill to every one
   of those readings stored (the killed worker's partitions by their new owner).

    python -m benchmarks.scale --readings 20000 --kills 10 --out benchmarks/results/scale.md
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from access.engine_auth import EngineAuth, serve_engine_auth
from access.registry import Registry
from benchmarks.alerts_stack import Servers, local_servers
from benchmarks.ingest_data import Shape, single
from benchmarks.ingest_procfs import cpu_seconds
from benchmarks.ingest_round import Stack
from benchmarks.ingest_scale import scale_round
from benchmarks.machine import machine, write_results
from benchmarks.scale_engine import (
    PARTITIONS,
    PREFIX,
    EngineRig,
    Worker,
    connect,
    create_database,
    disconnect,
    next_readings,
    publish_backlog,
    send,
    stored,
    until,
)
from moclo.cluster import RabbitCluster

WORKERS = (1, 2, 4)


def engine_round(rig: EngineRig, shape: Shape, n: int, name: str) -> dict[str, Any]:
    """Partitions declared, backlog published, drained by `n` workers, checked exactly."""
    database = name.replace("-", "_")
    with httpx.Client(base_url=rig.influx_url, timeout=30) as http:
        create_database(http, database)
        first = Worker(rig, database, 0, 1, f"{name}-declare")
        try:  # the bindings and queues exist before any reading is sent
            until(lambda: first.consuming() > 0, [first], f"{name}: declaring", 120)
        finally:
            first.stop()
        cpu0, began = rig.node_cpu(), time.perf_counter()
        publish_backlog(rig, shape.messages)
        publish_s, publish_cpu = time.perf_counter() - began, rig.node_cpu() - cpu0
        workers = [Worker(rig, database, i, n, name) for i in range(n)]
        try:
            until(lambda: any(w.consuming() for w in workers), workers, f"{name}: starting", 120)
            start, cpu_w, cpu_e = time.perf_counter(), _cpu(workers), rig.node_cpu()
            until(
                lambda: stored(http, database, rig.tenant) >= shape.readings,
                workers,
                f"{name}: draining",
                600,
            )
            seconds = time.perf_counter() - start
            worker_cpu, drain_cpu = _cpu(workers) - cpu_w, rig.node_cpu() - cpu_e
        finally:
            for worker in workers:
                worker.stop()
        count = stored(http, database, rig.tenant)
        if count != shape.readings:
            raise BenchmarkFailedError(f"{name}: {count} stored of {shape.readings}")
        http.post("/query", params={"q": f'DROP DATABASE "{database}"'})
    return {
        "workers": n,
        "readings": shape.readings,
        "publish_per_s": shape.readings / publish_s,
        "seconds": seconds,
        "per_s": shape.readings / seconds,
        "engine_us_per_reading": 1e6 * (publish_cpu + drain_cpu) / shape.readings,
        "engine_publish_us": 1e6 * publish_cpu / shape.readings,
        "worker_us_per_reading": 1e6 * worker_cpu / shape.readings,
        "load": os.getloadavg()[0],
    }


class BenchmarkFailedError(AssertionError):
    """A check of the engine's rounds failed: the figures mean nothing."""


def _cpu(workers: list[Worker]) -> float:
    return sum(cpu_seconds(w.process.pid) for w in workers if w.alive())


def failovers(rig: EngineRig, shape: Shape, kills: int) -> tuple[list[float], list[Phases]]:
    """Seconds from each SIGKILL of worker 0 (of 2) to every device's next reading stored, and
    where each failover's time went (`Phases`, from the new owner's log)."""
    database = "failover"
    times: list[float] = []
    phases: list[Phases] = []
    with httpx.Client(base_url=rig.influx_url, timeout=30) as http:
        create_database(http, database)
        devices = connect(rig, list(rig.devices))  # connected before the kills, as devices are
        try:
            for k in range(1, kills + 1):
                workers = _two_balanced(rig, database, f"failover-{k}")
                try:
                    before = stored(http, database, rig.tenant)
                    readings = next_readings(shape.messages, k)
                    workers[0].process.kill()  # SIGKILL
                    killed, killed_wall = time.perf_counter(), time.time()
                    workers[0].process.wait()
                    send(devices, readings)
                    sent = time.perf_counter() - killed
                    until(
                        _stored_at_least(http, database, rig.tenant, before + len(readings)),
                        [workers[1]],
                        f"failover {k}: the next readings stored",
                        60,
                    )
                    times.append(time.perf_counter() - killed)
                    phases.append(_phases(workers[1].text(), killed_wall, sent, times[-1]))
                finally:
                    for worker in workers:
                        worker.stop()
        finally:
            disconnect(devices)
    return times, phases


@dataclass(frozen=True, slots=True)
class Phases:
    """One failover's seconds after the kill: the devices' readings acknowledged (`sent`), the
    new owner's first take-over begun (`began`: the engine handed the partitions over and
    delivered), its last one done (`taken`: release wait, stored changes, snapshots), every
    reading seen stored (`stored`: judged, written, and this benchmark's 20 ms poll)."""

    sent: float
    began: float
    taken: float
    stored: float
    release_wait: float  # of the take-over, the longest wait for a release
    stored_changes: float  # and the longest read of the stored alert changes


def _phases(log: str, killed_wall: float, sent: float, total: float) -> Phases:
    began = taken = float("nan")
    waits, reads = [0.0], [0.0]
    for line in log.splitlines():
        try:
            at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp() - killed_wall
        except ValueError:
            continue
        if at < 0:
            continue
        if "taking over partitions" in line and began != began:  # the first (NaN until then)
            began = at
        elif " taken over: " in line:
            taken = at
            if match := _TAKE_OVER.search(line):
                waits.append(float(match["release"]))
                reads.append(float(match["read"]))
    return Phases(sent, began, taken, total, max(waits), max(reads))


# partition_state.py's line: "… (in 0.012 s: release 0.001 s, stored changes 0.008 s)"
_TAKE_OVER = re.compile(r"release (?P<release>[\d.]+) s, stored changes (?P<read>[\d.]+) s")


def _two_balanced(rig: EngineRig, database: str, name: str) -> list[Worker]:
    """Workers 0 and 1 of 2, fresh for every kill (so each kill finds the same shape): worker 0
    first, in front everywhere, until it stepped back from worker 1's two partitions."""
    workers = [Worker(rig, database, 0, 2, name)]
    try:
        until(lambda: workers[0].consuming() > 0, workers, f"{name}: starting", 120)
        workers.append(Worker(rig, database, 1, 2, name))
        until(_stepped_back(workers[0], 2), workers, f"{name}: balanced", 60)
    except BaseException:
        for worker in workers:
            worker.stop()
        raise
    return workers


def _stepped_back(worker: Worker, times: int) -> Callable[[], bool]:
    return lambda: worker.text().count("stepped back from") >= times


def _stored_at_least(
    http: httpx.Client, database: str, tenant: str, count: int
) -> Callable[[], bool]:
    return lambda: stored(http, database, tenant) >= count


def run(
    rig: EngineRig, stack: Stack, shape: Shape, kills: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    rows = []
    for n in WORKERS:
        rows.append(engine_round(rig, shape, n, f"engine-w{n}"))
        progress(f"  engine, {n} worker(s): {rows[-1]['per_s']:,.0f} readings/s")
    mosquitto = scale_round(stack, shape, 1, "mosquitto-1", progress)
    progress(f"  mosquitto, 1 ingest: {mosquitto['per_s'] or 0:,.0f} readings/s")
    times, phases = failovers(rig, shape, kills) if kills else ([], [])
    return {
        "engine": rows,
        "mosquitto": mosquitto,
        "failover_s": times,
        "failover_phases": [asdict(p) for p in phases],
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(figures: dict[str, Any], command: str) -> str:
    mq = figures["mosquitto"]
    lines = [
        "# Scale-out on the engine: throughput, CPU per reading, failover",
        "",
        f"`{command}` on {figures['machine']}; load average before: {figures['load']:.2f}. "
        "Everything (three RabbitMQ nodes, Mosquitto, InfluxDB, the workers and the publishing "
        "devices) shares these cores, so the workers' rates are the machine's, not the "
        "engine's; the CPU figures per reading are what carries over. One run, small sizes.",
        "",
        f"Readings: {figures['readings']:,} cow readings from {figures['devices']} devices "
        f"(MQTT 3.1.1, QoS 1, one connection each, spread over the three nodes), "
        f"{PREFIX!r} topics, {figures['partitions']} partitions.",
        "",
        "| drained by | readings/s | drain s | engine µs CPU / reading (publish + drain) "
        "| of which publish | worker µs CPU / reading (all workers) | load |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in figures["engine"]:
        lines.append(
            f"| engine, {row['workers']} worker(s) | {row['per_s']:,.0f} | {row['seconds']:.2f} "
            f"| {row['engine_us_per_reading']:.0f} | {row['engine_publish_us']:.0f} "
            f"| {row['worker_us_per_reading']:.0f} | {row['load']:.2f} |"
        )
    lines.append(
        f"| Mosquitto, 1 ingest | {mq['per_s'] or 0:,.0f} | {mq['seconds']:.2f} | – | – "
        f"| {mq['cpu_ms_per_1000']:.0f} | {mq['load']:.2f} |"
    )
    times = figures["failover_s"]
    if times:
        lines += [
            "",
            f"Failover over {len(times)} kills (SIGKILL of worker 0 of 2; then every device "
            "publishes its next reading; timed to all of them stored, the killed worker's "
            f"partitions by their new owner): p50 {percentile(times, 50):.2f} s, "
            f"p99 {percentile(times, 99):.2f} s, max {max(times):.2f} s "
            f"(all: {', '.join(f'{t:.2f}' for t in times)}).",
        ]
    if phases := figures.get("failover_phases"):
        lines += [
            "",
            "Where each failover's time went, in seconds after the kill (the new owner's log): "
            "the devices' readings acknowledged; its take-over begun (the engine handed the "
            "partitions over and delivered); its take-over done (release wait, stored alert "
            "changes, snapshots); every reading seen stored (judged, written, 20 ms polls).",
            "",
            "| kill | acknowledged | take-over begun | take-over done | stored "
            "| of the take-over: release wait | stored changes read |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {k} | {p['sent']:.2f} | {p['began']:.2f} | {p['taken']:.2f} | {p['stored']:.2f} "
            f"| {p['release_wait']:.2f} | {p['stored_changes']:.2f} |"
            for k, p in enumerate(phases, 1)
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="example: python -m benchmarks.scale --readings 20000 --kills 10 "
        "--out benchmarks/results/scale.md",
    )
    parser.add_argument("--readings", type=int, default=20_000, help="readings per round")
    parser.add_argument("--kills", type=int, default=10, help="failovers timed (0: none)")
    parser.add_argument("--out", default="-", help="the report's file (-: stdout)")
    parser.add_argument("--json", default=None, help="also the raw figures, as JSON, here")
    args = parser.parse_args(argv)
    shape = single(args.readings, seed=7, types=frozenset({"cow_tracker"}))
    load = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="moclo-scale-") as tmp,
        local_servers(Path(tmp)) as servers,
    ):
        figures = measure(Path(tmp), servers, shape, args.kills)
    figures |= {"machine": machine(), "load": load, "readings": shape.readings}
    command = " ".join(["python -m benchmarks.scale", *(argv or sys.argv[1:])])
    write_results(figures, report(figures, command), out=args.out, json_path=args.json)


def measure(workdir: Path, servers: Servers, shape: Shape, kills: int) -> dict[str, Any]:
    """Boots the cluster with its auth service, runs every section, stops the cluster."""
    registry = Registry(workdir / "registry.sqlite")
    auth = EngineAuth(registry.path, prefix=PREFIX, check_every_s=0.0)
    stack = Stack(servers, workdir / "mosquitto" / "mosquitto.log")
    with serve_engine_auth(auth) as auth_url:
        cluster = RabbitCluster(workdir / "cluster", auth_url=auth_url)
        try:
            cluster.start()
            rig = EngineRig.register(cluster, registry, servers.influx_url, workdir, shape.messages)
            figures = run(rig, stack, shape, kills, lambda s: print(s, file=sys.stderr))
        finally:
            cluster.stop()
    times = figures["failover_s"]
    return figures | {
        "devices": len(rig.devices),
        "partitions": PARTITIONS,
        "failover_mean_s": statistics.mean(times) if times else None,
    }


if __name__ == "__main__":
    main()
