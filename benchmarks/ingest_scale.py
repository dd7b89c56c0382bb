"""The ingest benchmark's scale-out section: `moclo ingest` processes sharing one MQTT 5 shared
subscription (MOCLO_INGEST_SHARE_GROUP; each with its own MOCLO_INGEST_CLIENT_ID, judging no
alert rules), draining the single-reading backlog together.

For 1, 2 and 4 members, each round on its own topic prefix and database:

1. Sessions: every member is started, and stopped (SIGTERM) once the broker logs its shared
   subscription (`ID 1 $share/GROUP/PREFIX/+/+/+/telemetry`), so each has a persistent session.
2. Backlog: the readings are published at QoS 1; Mosquitto deals a shared subscription's
   messages among the members' sessions in turn, offline ones included, so each member's
   session holds its share.
3. Drain: all members are started at once and timed as `benchmarks/ingest_round.py` times one
   writer (polls every 50 ms): from the first poll that finds any member connected in the
   broker's log to the first that finds all N readings stored. CPU is the members' CPU time
   within that interval, summed; peak RSS is each member's VmHWM, read before it is stopped.
4. Check: exactly N points of N distinct readings, ingest's tags and fields, no rejection.

Two cores hold the members, Mosquitto and InfluxDB together: more members than cores only
share the same CPU more finely.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks.alerts_stack import BenchmarkFailed, influxql
from benchmarks.alerts_throughput import check_stored, publish_all
from benchmarks.ingest_contenders import CONTENDERS, moclo_ingest, topic_filter
from benchmarks.ingest_data import Shape
from benchmarks.ingest_procfs import cpu_seconds, peak_rss_mb
from benchmarks.ingest_round import (
    LIMIT_S,
    POLL_S,
    LogWatch,
    Running,
    Stack,
    check_fields,
    points_written,
    readings_stored,
)
from core.settings import Settings

MEMBERS = (1, 2, 4)


def members(settings: Settings, group: str, n: int) -> list[Settings]:
    return [
        settings.model_copy(
            update={
                "ingest_client_id": f"{settings.ingest_id}-{i}",
                "ingest_share_group": group,
            }
        )
        for i in range(n)
    ]


def _start(group: list[Settings], workdir: Path) -> list[Running]:
    return [
        Running(
            CONTENDERS["c"],
            moclo_ingest(s, workdir / s.ingest_id, 0),
            workdir / f"{s.ingest_id}.log",
        )
        for s in group
    ]


def _stop(running: list[Running], what: str) -> None:
    for member in running:
        member.stop()
    for member in running:
        if member.process.returncode != 0:
            raise member.died(what)


def _until(
    condition: Callable[[], bool], running: list[Running], what: str, limit_s: float
) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        for member in running:
            if not member.alive():
                _stop(running, what)
                raise member.died(what)
        if time.monotonic() > deadline:
            _stop(running, what)
            raise BenchmarkFailed(f"{what}: not within {limit_s:.0f} s")
        time.sleep(POLL_S)  # polling a condition; the deadline bounds it


def create_sessions(stack: Stack, group: list[Settings], name: str, workdir: Path) -> None:
    """Every member started, then stopped once the broker has logged its shared subscription."""
    watch = LogWatch(stack.broker_log)
    running = _start(group, workdir)
    lines = [f": {s.ingest_id} 1 $share/{s.ingest_share_group}/{topic_filter(s)}\n" for s in group]
    _until(lambda: all(watch.has(line) for line in lines), running, f"{name}: subscribing", 120)
    _stop(running, f"{name}: stopping after subscribing")


def scale_round(
    stack: Stack, shape: Shape, n: int, name: str, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Sessions, backlog, timed drain by `n` members, exact check, database dropped."""
    settings = stack.servers.settings(name)
    workdir = stack.servers.workdir / name
    influxql(settings, f'CREATE DATABASE "{settings.influx_db}"')
    group = members(settings, name.replace("-", "_"), n)
    for s in group:
        (workdir / s.ingest_id).mkdir(parents=True, exist_ok=True)
    create_sessions(stack, group, name, workdir)
    publish_all(settings.mqtt_url, settings.topic_prefix, shape.messages)
    load = os.getloadavg()[0]
    progress(f"    {name}: {len(shape.messages):,} messages queued for {n} member(s), draining…")
    watch = LogWatch(stack.broker_log)
    connected = [f" as {s.ingest_id} (" for s in group]
    running = _start(group, workdir)
    start: tuple[float, float] | None = None  # time, CPU seconds of all members
    deadline = time.monotonic() + LIMIT_S
    try:
        with httpx.Client(base_url=settings.influx_url, timeout=30) as http:
            while True:
                at = time.perf_counter()
                for member in running:
                    if not member.alive():
                        raise member.died(f"{name}: draining")
                if time.monotonic() > deadline:
                    raise BenchmarkFailed(f"{name}: not drained in {LIMIT_S:.0f} s")
                cpu = sum(cpu_seconds(m.pid) for m in running)
                if start is None:
                    if any(watch.has(line) for line in connected):
                        start = (at, cpu)
                elif points_written(http, settings.influx_db) >= shape.readings and (
                    readings_stored(settings) == shape.readings
                ):
                    break
                time.sleep(max(0.0, at + POLL_S - time.perf_counter()))  # the poll's period
        rss = [peak_rss_mb(m.pid) for m in running]
    finally:
        _stop(running, f"{name}: stopping after the drain")
    result = check_stored(settings, shape.readings) | check_fields(settings)
    influxql(settings, f'DROP DATABASE "{settings.influx_db}"')
    assert start is not None  # the loop ends only after the clock started
    seconds = at - start[0]
    return result | {
        "members": n,
        "readings": shape.readings,
        "seconds": seconds,
        "per_s": shape.readings / seconds if seconds > 0 else None,
        "cpu_in_interval": cpu - start[1],
        "cpu_ms_per_1000": 1e6 * (cpu - start[1]) / shape.readings,
        "rss_sum_mb": sum(rss),
        "rss_max_mb": max(rss),
        "load": load,
    }


def scale_out(
    stack: Stack, shape: Shape, rounds: int, sizes: tuple[int, ...], progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    rows = []
    for r in range(1, rounds + 1):
        for n in sizes:
            row = scale_round(stack, shape, n, f"so{n}-{r}", progress)
            rows.append(row | {"round": r})
            progress(
                f"    {n} member(s): {row['per_s'] or 0:,.0f} readings/s, "
                f"{row['cpu_ms_per_1000']:.0f} ms CPU per 1,000, RSS sum {row['rss_sum_mb']:.0f} MB"
            )
    return rows
