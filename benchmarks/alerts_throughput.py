"""Section 1 of the alert benchmark: how fast ingest drains a backlog with the default rules and
with none, both with IngestOptions' defaults (a window of 10,000 below a larger backlog).

Each round: a fresh persistent session, N readings of every device type queued for it at the
broker, then ingest started in its own process and timed until it has handled all N; InfluxDB
must then hold exactly those N readings.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from benchmarks.alerts_stack import (
    DAY,
    ROOT,
    TENANTS,
    BenchmarkFailed,
    Servers,
    child_command,
    influxql,
    peak_rss_mb,
)
from core.mqtt import MqttEndpoint
from core.settings import Settings
from devices.catalogue import DEVICE_TYPES
from ingest.options import IngestOptions
from ingest.service import Ingest
from ingest.stats import IngestStats
from simulators.clock import SimulatedClock
from simulators.fleet import Fleet, FleetSpec
from simulators.publisher import MqttPublisher

# Each type's share of the readings in the throughput mix.
SHARES = {
    "cow_tracker": 0.21,
    "thermostat": 0.15,
    "smart_meter": 0.15,
    "car": 0.15,
    "pacemaker": 0.10,
    "fridge": 0.08,
    "humidity_meter": 0.08,
    "blood_pressure": 0.04,  # twice a day, so many meters
    "light": 0.04,
}
WINDOW = IngestOptions().window  # every round runs with the defaults: this, below the backlog


def mixed_readings(
    n: int, *, seed: int, span_s: float = 2 * DAY, end: float | None = None
) -> list[tuple[str, bytes]]:
    """The first `n` readings, in time order, of a fleet of every device type over `span_s` of
    reading time ending at `end` (default: now): (topic without its prefix, payload). One
    reading per device every 10 minutes (blood-pressure meters: twice a day), a random episode
    (fever, heater failure, tachycardia, ...) about once a day per device, and one device in
    ten offline for 3 h."""
    interval = 600.0
    readings_per_device = {t: span_s / interval for t in SHARES}
    readings_per_device["blood_pressure"] = max(1.0, 2 * span_s / DAY)
    specs = [
        FleetSpec(
            TENANTS[t],
            t,
            max(1, math.ceil(share * n * 1.1 / readings_per_device[t])),
            None if t == "blood_pressure" else interval,
            incident_every_s=DAY,
        )
        for t, share in SHARES.items()
    ]
    start = (time.time() if end is None else end) - span_s
    fleet = Fleet(specs, prefix="p", seed=seed, start=start)
    rng = random.Random(seed)
    for device in fleet.devices[::10]:
        device.add_episode("offline", start + rng.uniform(0, span_s - 3 * 3600), 3 * 3600)
    out: list[tuple[str, bytes]] = []
    for device, payload, _ in fleet.messages(
        SimulatedClock(start), threading.Event(), duration_s=span_s
    ):
        out.append((device.topic.removeprefix("p/"), payload))
        if len(out) == n:
            return out
    raise BenchmarkFailed(f"the fleet made {len(out)} readings, fewer than {n}")


def publish_all(mqtt_url: str, prefix: str, messages: list[tuple[str, bytes]]) -> None:
    """Publishes at QoS 1 and waits for every PUBACK."""
    publisher = MqttPublisher(MqttEndpoint.from_url(mqtt_url), client_id=f"{prefix}-pub")
    publisher.start()
    try:
        for topic, payload in messages:
            publisher.publish(f"{prefix}/{topic}", payload)
        if not publisher.flush(timeout_s=600):
            raise BenchmarkFailed("the broker did not acknowledge every reading")
    finally:
        publisher.close()


async def _run_until(
    settings: Settings, options: IngestOptions, done: Callable[[IngestStats], bool], limit_s: float
) -> tuple[float, IngestStats]:
    """Runs ingest until `done(stats)`; returns the seconds from its start to then."""
    stop = asyncio.Event()
    stats = IngestStats()
    ingest = Ingest(settings, stop, options=options, stats=stats)
    began = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(ingest.run(), name="ingest")
        while not done(stats):
            if time.perf_counter() - began > limit_s:
                stop.set()
                raise BenchmarkFailed(f"ingest handled {stats.messages} messages in {limit_s}s")
            await asyncio.sleep(0.002)  # polling a counter: this is the timer's resolution
        elapsed = time.perf_counter() - began
        stop.set()
    return elapsed, stats


def create_session(settings: Settings) -> None:
    """Starts ingest once and stops it: the broker now queues its telemetry while it is away."""
    asyncio.run(_run_until(settings, IngestOptions(), lambda _: True, 60))


class _UnconfirmedCounter(logging.Handler):
    """Counts ingest's warning "the broker did not confirm N alert notifications within 10 s":
    each one is a batch that waited 10 s for its notifications' PUBACKs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "did not confirm" in record.getMessage()


def drain(settings: Settings, expected: int, rules: bool) -> dict[str, float]:
    """Times ingest (IngestOptions' defaults) from its start until it has handled `expected`
    queued messages."""
    options = IngestOptions(alert_rules=rules)
    counter = _UnconfirmedCounter()
    logging.getLogger("moclo.ingest").addHandler(counter)
    try:
        seconds, stats = asyncio.run(
            _run_until(settings, options, lambda s: s.messages >= expected, 900)
        )
    finally:
        logging.getLogger("moclo.ingest").removeHandler(counter)
    return {
        "seconds": seconds,
        "messages": stats.messages,
        "unconfirmed": counter.count,
        "peak_rss_mb": peak_rss_mb(),
    }


def check_stored(settings: Settings, expected: int) -> dict[str, Any]:
    """What InfluxDB holds; BenchmarkFailed unless it is exactly the `expected` readings."""
    types = ",".join(f'"{t}"' for t in DEVICE_TYPES)
    points = sum(s["values"][0][1] for s in influxql(settings, f'SELECT count("seq") FROM {types}'))
    distinct = sum(
        s["values"][0][1]
        for s in influxql(
            settings, f'SELECT count(distinct("seq")) FROM {types} GROUP BY "device_id"'
        )
    )
    rejected = sum(
        s["values"][0][1] for s in influxql(settings, 'SELECT count("error") FROM "moclo_rejected"')
    )
    by_rule = {
        s["tags"]["rule"]: s["values"][0][1]
        for s in influxql(settings, 'SELECT count("state") FROM "moclo_alerts" GROUP BY "rule"')
    }
    if not (points == distinct == expected and rejected == 0):
        raise BenchmarkFailed(
            f"{settings.influx_db}: {expected} readings sent, InfluxDB holds {points} points of "
            f"{distinct} distinct readings and {rejected} rejections "
            f"(lost {expected - distinct}, duplicated {points - distinct})"
        )
    return {"stored": distinct, "alert_changes": sum(by_rule.values()), "by_rule": by_rule}


def throughput_round(
    servers: Servers,
    messages: list[tuple[str, bytes]],
    *,
    rules: bool,
    name: str,
    in_child: bool = True,
) -> dict[str, Any]:
    """One round: session, backlog, timed drain, exact count in InfluxDB, database dropped."""
    settings = servers.settings(name)
    create_session(settings)
    publish_all(servers.mqtt_url, settings.topic_prefix, messages)
    load = os.getloadavg()[0]
    if in_child:
        args = {"settings": settings.model_dump(), "expected": len(messages), "rules": rules}
        with (servers.workdir / f"{name}.log").open("wb") as log:
            done = subprocess.run(
                child_command("drain", args),
                stdout=subprocess.PIPE,
                stderr=log,
                check=True,
                cwd=ROOT,
            )
        result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    else:
        result = drain(settings, len(messages), rules)
    result |= check_stored(settings, len(messages))
    result |= {"rules": rules, "load": load}
    result["per_s"] = len(messages) / result["seconds"]
    influxql(settings, f'DROP DATABASE "{settings.influx_db}"')
    return result


def throughput(
    servers: Servers, readings: int, rounds: int, seed: int, progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    """`rounds` pairs, rules on then off, all with IngestOptions' defaults."""
    messages = mixed_readings(readings, seed=seed)
    results = []
    for r in range(1, rounds + 1):
        for rules in (True, False):
            progress(f"  round {r}, rules {'on' if rules else 'off'}…")
            name = f"tp{r}-{'on' if rules else 'off'}"
            results.append(throughput_round(servers, messages, rules=rules, name=name))
            progress(f"    {results[-1]}")
    return results
