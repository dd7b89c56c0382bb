"""What alert rules cost: ingest throughput with the default rules against none, publish→alert
latency at 1,000 readings/s, and the alert engine's memory per device.

    .venv/bin/python -m benchmarks.alerts                  # writes benchmarks/results/alerts.md
    .venv/bin/python -m benchmarks.alerts --quick --out -  # a one-minute smoke run, printed

One Mosquitto and one InfluxDB are started here (moclo/stack.py). Each timed ingest runs in its
own process, as `moclo ingest` would, so rounds do not share a heap or an interpreter:

1. Throughput: N readings of all eight device types (simulators/, a fixed seed, two days of
   reading time with random episodes and devices going offline) wait at the broker for
   ingest's persistent session; ingest starts and is timed until it has handled all of them.
   Rules on (every type's defaults) and off (`IngestOptions(alert_rules=False)`) alternate, a
   fresh database and session each round, and InfluxDB must then hold exactly N readings.
2. Latency: ingest running, a publisher at a steady rate with real-time timestamps, and a
   known subset of devices crossing thresholds (fever cows, pacemakers in and out of
   tachycardia); for each expected alert, publish of the reading that completed the condition
   → the alert on `{prefix}/{tenant}/alerts/{device_id}`.
3. Memory: an `AlertEngine` in this process fed days of readings per device type, measured
   with tracemalloc after 2 and after 4 days; the snapshot's size and its dump/load times.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import logging
import math
import os
import random
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as paho

from benchmarks.faults import machine
from devices.base import Reading, format_timestamp, parse_timestamp
from devices.catalogue import DEVICE_TYPES
from devices.topics import DeviceAddress, alert_subscription, telemetry_topic
from ingest.alerts import AlertEngine, snapshot
from ingest.decode import ValidReading
from ingest.service import Ingest, IngestOptions, IngestStats
from moclo.logs import configure_logging
from moclo.mqtt import MqttEndpoint, make_client
from moclo.settings import Settings
from moclo.stack import InfluxServer, MosquittoServer, find_executable, free_port
from simulators.catalogue import BEHAVIOURS
from simulators.clock import SimulatedClock
from simulators.fleet import Fleet, FleetSpec
from simulators.publisher import MqttPublisher

DAY = 86_400.0
ROOT = Path(__file__).resolve().parent.parent  # where `python -m benchmarks.alerts` runs
# Which tenant each type belongs to: a farm, a cardiology ward, households, a car fleet.
TENANTS = {
    "cow_tracker": "farm",
    "pacemaker": "ward",
    "blood_pressure": "ward",
    "thermostat": "homes",
    "smart_meter": "homes",
    "fridge": "homes",
    "humidity_meter": "homes",
    "car": "fleet",
}
# Each type's share of the readings in the throughput mix.
SHARES = {
    "cow_tracker": 0.25,
    "thermostat": 0.15,
    "smart_meter": 0.15,
    "car": 0.15,
    "pacemaker": 0.10,
    "fridge": 0.08,
    "humidity_meter": 0.08,
    "blood_pressure": 0.04,  # twice a day, so many meters
}


# Ingest's MQTT window (Receive Maximum) for most throughput rounds: MQTT's largest, above the
# backlog. With the default (10,000) and a larger backlog, paho's network thread parks while
# the window is full (ingest/source.py) with telemetry queued in the socket ahead of the
# PUBACKs of alert notifications, which the consumer waits for (ingest/service.py
# `_announce`) until its 10 s timeout: every batch that raises an alert stalls 10 s.
WIDE_WINDOW = 65_535
DEFAULT_WINDOW = IngestOptions().window


class BenchmarkFailed(AssertionError):
    """A correctness check failed: the figures of this run mean nothing."""


@dataclass(frozen=True, slots=True)
class Servers:
    mqtt_url: str
    influx_url: str
    workdir: Path

    def settings(self, name: str) -> Settings:
        """Settings for one ingest: its own database, topic prefix, session and spool."""
        return Settings(
            mqtt_url=self.mqtt_url,
            influx_url=self.influx_url,
            influx_db=name.replace("-", "_"),
            topic_prefix=name,
            ingest_client_id=f"ingest-{name}",
            spool_dir=str(self.workdir / "spool"),
            http_listen="off",
        )


@contextmanager
def local_servers(workdir: Path) -> Iterator[Servers]:
    broker = MosquittoServer(workdir / "mosquitto", free_port())
    database = InfluxServer(workdir / "influxdb", free_port())
    broker.start()
    try:
        database.start()
        try:
            yield Servers(broker.url, database.url, workdir)
        finally:
            database.stop()
    finally:
        broker.stop()


def influxql(settings: Settings, query: str) -> list[dict[str, Any]]:
    """Every series of an InfluxQL answer, as {"name", "tags", "values"}."""
    response = httpx.post(
        f"{settings.influx_url}/query", data={"db": settings.influx_db, "q": query}, timeout=60
    )
    response.raise_for_status()
    return [s for r in response.json().get("results", []) for s in r.get("series", [])]


def _peak_rss_mb() -> float:
    # VmHWM, not getrusage: a child's ru_maxrss starts at its parent's peak.
    status = Path("/proc/self/status").read_text()
    return next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmHWM")) / 1024


def _child_command(mode: str, args: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "benchmarks.alerts", "--child", mode, orjson.dumps(args).decode()]


# -- 1. throughput ------------------------------------------------------------------------------


def mixed_readings(
    n: int, *, seed: int, span_s: float = 2 * DAY, end: float | None = None
) -> list[tuple[str, bytes]]:
    """The first `n` readings, in time order, of a fleet of all eight types over `span_s` of
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


class _StallCounter(logging.Handler):
    """Counts ingest's "the broker did not confirm ... alert notifications within 10 s"."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.stalls = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.stalls += "did not confirm" in record.getMessage()


def drain(settings: Settings, expected: int, rules: bool, window: int) -> dict[str, float]:
    """Times ingest from its start until it has handled `expected` queued messages."""
    options = IngestOptions(alert_rules=rules, window=window)
    counter = _StallCounter()
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
        "stalls": counter.stalls,
        "peak_rss_mb": _peak_rss_mb(),
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
    window: int = DEFAULT_WINDOW,
    in_child: bool = True,
) -> dict[str, Any]:
    """One round: session, backlog, timed drain, exact count in InfluxDB, database dropped."""
    settings = servers.settings(name)
    create_session(settings)
    publish_all(servers.mqtt_url, settings.topic_prefix, messages)
    load = os.getloadavg()[0]
    if in_child:
        args = {"settings": settings.model_dump(), "expected": len(messages)}
        args |= {"rules": rules, "window": window}
        with (servers.workdir / f"{name}.log").open("wb") as log:
            done = subprocess.run(
                _child_command("drain", args),
                stdout=subprocess.PIPE,
                stderr=log,
                check=True,
                cwd=ROOT,
            )
        result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    else:
        result = drain(settings, len(messages), rules, window)
    result |= check_stored(settings, len(messages))
    result |= {"rules": rules, "window": window, "load": load}
    result["per_s"] = len(messages) / result["seconds"]
    influxql(settings, f'DROP DATABASE "{settings.influx_db}"')
    return result


def throughput(
    servers: Servers, readings: int, rounds: int, seed: int, progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    """`rounds` alternating pairs with the window above the backlog, then one pair with
    IngestOptions' defaults (see WIDE_WINDOW)."""
    messages = mixed_readings(readings, seed=seed)
    plan = [(r + 1, WIDE_WINDOW) for r in range(rounds)] + [(rounds + 1, DEFAULT_WINDOW)]
    results = []
    for r, window in plan:
        for rules in (True, False):
            progress(f"  round {r}, rules {'on' if rules else 'off'}, window {window}…")
            name = f"tp{r}-{'on' if rules else 'off'}"
            results.append(
                throughput_round(servers, messages, rules=rules, name=name, window=window)
            )
            progress(f"    {results[-1]}")
    return results


# -- 2. latency ---------------------------------------------------------------------------------


@dataclass(slots=True)
class LiveDevice:
    """A device of the latency run: its example reading, with a value pattern for the devices
    that are there to raise alerts (`completes(k)`: reading k completes a condition)."""

    device_type: str
    tenant: str
    device_id: str
    pattern: Callable[[int], dict[str, Any]] | None = None
    completes: Callable[[int], bool] = lambda k: False
    seq: int = 0

    def payload(self, ts: float) -> bytes:
        fields = {**DEVICE_TYPES[self.device_type].example, "ts": ts, "seq": self.seq}
        if self.pattern is not None:
            fields |= self.pattern(self.seq)
        self.seq += 1
        return orjson.dumps(fields)


def fever_cow(n: int) -> LiveDevice:
    """Three readings at 40 °C (the third raises `fever`), three at 38.6 (the third resolves)."""
    return LiveDevice(
        "cow_tracker",
        "farm",
        f"fever-{n:03d}",
        lambda k: {"body_temp_c": 40.0 if k % 6 < 3 else 38.6},
        lambda k: k % 6 in (2, 5),
    )


def racing_heart(n: int) -> LiveDevice:
    """One reading at 160 bpm (raises `tachycardia`), three at 70 (the third resolves)."""
    return LiveDevice(
        "pacemaker",
        "ward",
        f"racing-{n:03d}",
        lambda k: {"heart_rate_bpm": 160 if k % 4 == 0 else 70},
        lambda k: k % 4 in (0, 3),
    )


# The latency runs: (linger_s, snapshot_every_s). IngestOptions' defaults first, then a short
# linger, then that with no periodic alert-state snapshot: what each costs the tail.
VARIANTS = ((0.1, 30.0), (0.01, 30.0), (0.01, 3600.0))


@dataclass(frozen=True, slots=True)
class LiveLoad:
    rate: float = 1_000.0  # readings/s, all devices together
    duration_s: float = 30.0  # measured: the alerting devices publish for this long
    warmup_s: float = 10.0  # background only: every background device reports once first
    alerting: int = 20  # cows and pacemakers each: 6.7 + 10 alert changes a second
    linger_s: float = 0.1  # IngestOptions' default
    snapshot_every_s: float = 30.0  # IngestOptions' default


def schedule(load: LiveLoad) -> list[tuple[float, LiveDevice]]:
    """(seconds from the start, device), in time order: background devices of every type, each
    every `warmup_s`, and from then on the alerting devices once a second each."""
    alerting = [fever_cow(i) for i in range(load.alerting)] + [
        racing_heart(i) for i in range(load.alerting)
    ]
    background_rate = load.rate - len(alerting)
    count = max(1, round(background_rate * load.warmup_s))
    types = list(DEVICE_TYPES)
    background = [
        LiveDevice(types[i % len(types)], TENANTS[types[i % len(types)]], f"bg-{i:05d}")
        for i in range(count)
    ]
    events = [
        (k * load.warmup_s + i / background_rate, device)
        for i, device in enumerate(background)
        for k in range(math.ceil((load.warmup_s + load.duration_s) / load.warmup_s))
    ]
    events += [
        (load.warmup_s + k + j / len(alerting), device)
        for j, device in enumerate(alerting)
        for k in range(int(load.duration_s))
    ]
    events.sort(key=lambda e: e[0])
    return [e for e in events if e[0] < load.warmup_s + load.duration_s]


class AlertWatcher:
    """Subscribes to every tenant's alert topic and notes when each alert arrives."""

    def __init__(self, mqtt_url: str, prefix: str) -> None:
        self.arrived: list[tuple[float, str, str]] = []  # when, device id, the alert's ts
        self._subscribed = threading.Event()
        endpoint = MqttEndpoint.from_url(mqtt_url)
        self._client = make_client(endpoint, f"{prefix}-watch")
        self._client.on_connect = lambda c, *_: c.subscribe(alert_subscription(prefix), qos=1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(endpoint.host, endpoint.port)
        self._client.loop_start()
        if not self._subscribed.wait(15):
            self.close()
            raise BenchmarkFailed("the alert subscriber was not subscribed within 15 s")

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        now = time.monotonic()
        alert = orjson.loads(msg.payload)
        self.arrived.append((now, alert["device_id"], alert["ts"]))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@contextmanager
def live_ingest(settings: Settings, options: dict[str, float], log_path: Path) -> Iterator[None]:
    """`Ingest` with the default rules in a child process, from subscribed to stopped."""
    args = {"settings": settings.model_dump(), "options": options}
    command = _child_command("live", args)
    with (
        log_path.open("wb") as log,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT) as child,
    ):
        try:
            assert child.stdout is not None
            ready, _, _ = select.select([child.stdout], [], [], 60)
            if not ready or child.stdout.readline().strip() != "ready":
                raise BenchmarkFailed(f"ingest did not start; see {log_path}")
            yield
        finally:
            child.send_signal(signal.SIGTERM)
            child.wait(60)


def _serve_live(settings: Settings, options: IngestOptions) -> None:
    """The child's side of `live_ingest`: runs until SIGTERM."""

    async def main() -> None:
        stop, ready = asyncio.Event(), asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        ingest = Ingest(settings, stop, options=options)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(ingest.run(ready), name="ingest")
            await ready.wait()
            print("ready", flush=True)

    asyncio.run(main())


def latency(servers: Servers, load: LiveLoad, name: str) -> dict[str, Any]:
    """Ingest running; a steady stream with alerting devices; each expected alert's delay."""
    settings = servers.settings(name)
    plan = schedule(load)
    expected: dict[tuple[str, str], float] = {}  # (device id, reading ts) → when published
    endpoint = MqttEndpoint.from_url(servers.mqtt_url)
    options = {"linger_s": load.linger_s, "snapshot_every_s": load.snapshot_every_s}
    with live_ingest(settings, options, servers.workdir / f"{name}.log"):
        watcher = AlertWatcher(servers.mqtt_url, settings.topic_prefix)
        publisher = MqttPublisher(endpoint, client_id=f"{name}-pub")
        publisher.start()
        try:
            began = time.monotonic() + 0.1
            for offset, device in plan:
                pause = began + offset - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # pacing a load generator, not synchronisation
                ts = round(time.time(), 6)
                completes = device.completes(device.seq)
                payload = device.payload(ts)
                topic = telemetry_topic(
                    settings.topic_prefix, device.tenant, device.device_type, device.device_id
                )
                sent = time.monotonic()
                publisher.publish(topic, payload)
                if completes:
                    expected[(device.device_id, format_timestamp(parse_timestamp(ts)))] = sent
            seconds = time.monotonic() - began
            if not publisher.flush(timeout_s=60):
                raise BenchmarkFailed("the broker did not acknowledge every reading")
            deadline = time.monotonic() + 30
            while len(watcher.arrived) < len(expected) and time.monotonic() < deadline:
                time.sleep(0.05)  # waiting for the last alerts, under a deadline
        finally:
            publisher.close()
            watcher.close()
    delays = []
    unexpected = 0
    for arrived, device_id, alert_ts in watcher.arrived:
        sent_at = expected.pop((device_id, alert_ts), None)
        if sent_at is None:
            unexpected += 1
        else:
            delays.append((arrived - sent_at) * 1000)
    if expected:
        missing = next(iter(expected))
        raise BenchmarkFailed(f"{len(expected)} expected alerts never arrived, e.g. {missing}")
    delays.sort()
    return {
        "linger_s": load.linger_s,
        "snapshot_every_s": load.snapshot_every_s,
        "readings": len(plan),
        "rate": len(plan) / seconds,
        "alerts": len(delays),
        "unexpected": unexpected,
        "p50_ms": percentile(delays, 50),
        "p99_ms": percentile(delays, 99),
        "max_ms": delays[-1],
        "over_100ms": sum(d > 100 for d in delays),
    }


def percentile(ordered: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# -- 3. memory ----------------------------------------------------------------------------------


@dataclass(slots=True)
class MemoryRow:
    label: str
    devices: int
    readings: int = 0
    bytes_at: dict[str, float] = field(default_factory=dict)  # "2 days" → bytes per device
    open_at: dict[str, int] = field(default_factory=dict)  # "2 days" → open alerts
    changes: int = 0
    snapshot_bytes: float = 0.0  # per device
    dump_ms: float = 0.0
    load_ms: float = 0.0


def simulated_readings(
    device_type: str, templates: int, steps: int, interval_s: float, seed: int, start: float
) -> list[list[Reading | None]]:
    """`templates` simulated devices' readings (None: no reading that turn), validated."""
    model = DEVICE_TYPES[device_type].reading
    out = []
    for j in range(templates):
        rng = random.Random(f"{seed}:{device_type}:{j}")
        behaviour = BEHAVIOURS[device_type](rng, start, incident_every_s=2 * DAY)
        if device_type == "thermostat" and interval_s < 3600:
            # The worst case for the delta window: heating for hours and the room not warming.
            behaviour.episodes.add("heater_failure", start, steps * interval_s)
        readings: list[Reading | None] = []
        for k in range(steps):
            t = start + k * interval_s + j * interval_s / templates
            fields = behaviour.fields(t)
            readings.append(
                None if fields is None else model.model_validate({"ts": t, "seq": k, **fields})
            )
        out.append(readings)
    return out


def engine_memory(
    device_type: str,
    devices: int,
    *,
    checkpoints: tuple[float, ...] = (2 * DAY, 4 * DAY),
    interval_s: float = 3600.0,
    label: str = "",
    templates: int = 64,
    seed: int = 1,
) -> MemoryRow:
    """An engine fed `devices` devices of one type, one reading every `interval_s` of reading
    time each; its traced memory per device at each checkpoint, then its snapshot.

    Readings come from `templates` simulated devices (device i replays template i mod
    `templates`), made before tracing starts, so only what the engine keeps is counted."""
    start = 1_795_000_000.0  # a fixed reading time: the same figures on every run
    steps = int(checkpoints[-1] / interval_s)
    replay = simulated_readings(device_type, templates, steps, interval_s, seed, start)
    row = MemoryRow(label or device_type, devices)
    now = [0]
    tenant, prefix = TENANTS[device_type], BEHAVIOURS[device_type].id_prefix
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        engine = AlertEngine(wall_ns=lambda: now[0])  # the wall clock follows reading time
        marks = iter(checkpoints)
        mark = next(marks)
        for k in range(steps):
            for i in range(devices):
                reading = replay[i % templates][k]
                if reading is None:
                    continue
                now[0] = reading.ts
                # A new address per reading, as the decoder makes; the engine keeps the first.
                address = DeviceAddress(tenant, device_type, f"{prefix}-{i:05d}")
                row.changes += len(engine.evaluate(ValidReading(address, reading)))
                row.readings += 1
            if (k + 1) * interval_s >= mark:
                gc.collect()
                used = tracemalloc.get_traced_memory()[0] - base
                row.bytes_at[_duration(mark)] = used / devices
                row.open_at[_duration(mark)] = engine.open_alerts()
                mark = next(marks, math.inf)
    finally:
        tracemalloc.stop()
    began = time.perf_counter()
    data = snapshot.dump(engine)
    row.dump_ms = (time.perf_counter() - began) * 1000
    restored = AlertEngine()
    began = time.perf_counter()
    loaded = snapshot.load(restored, data)
    row.load_ms = (time.perf_counter() - began) * 1000
    if loaded != len(engine.devices) or restored.open_alerts() != engine.open_alerts():
        raise BenchmarkFailed(f"{device_type}: the snapshot did not restore the engine")
    row.snapshot_bytes = len(data) / devices
    return row


def _duration(seconds: float) -> str:
    return f"{seconds / DAY:g} days" if seconds >= DAY else f"{seconds / 3600:g} h"


def memory(cows: int, others: int, progress: Callable[[str], None]) -> list[MemoryRow]:
    rest = [t for t in DEVICE_TYPES if t != "cow_tracker"]
    rows = [engine_memory("cow_tracker", cows)]
    progress(f"  {rows[-1]}")
    for i, device_type in enumerate(rest):
        rows.append(engine_memory(device_type, others // len(rest) + (i < others % len(rest))))
        progress(f"  {rows[-1]}")
    rows.append(
        engine_memory(
            "thermostat",
            max(1, others // 20),
            checkpoints=(2 * 3600, 4 * 3600),
            interval_s=60,
            label="thermostat, heating 4 h without warming, a reading a minute",
        )
    )
    progress(f"  {rows[-1]}")
    return rows


# -- the report ---------------------------------------------------------------------------------


def _version(name: str, package: str, flag: str) -> str:
    """The first line a server prints about its version, e.g. "mosquitto version 2.0.11"."""
    command = [find_executable(name, package=package), flag]
    done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    return next((ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()), name)


def report(
    args: argparse.Namespace,
    command: str,
    rounds: list[dict[str, Any]],
    lat: list[dict[str, Any]],
    mem: list[MemoryRow],
    loads: tuple[float, float],
) -> str:
    wide = [r for r in rounds if r["window"] == WIDE_WINDOW]
    on = [r["per_s"] for r in wide if r["rules"]]
    off = [r["per_s"] for r in wide if not r["rules"]]
    ratios = [a / b for a, b in zip(on, off, strict=True)]
    ratio = statistics.median(ratios)
    default_on, default_off = (r for r in rounds if r["window"] == DEFAULT_WINDOW)
    t1 = [
        "| round | rules | window | readings/s | seconds | alert changes stored | 10 s stalls "
        "| peak RSS | load |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(rounds):
        t1.append(
            f"| {i // 2 + 1} | {'on' if r['rules'] else 'off'} | {r['window']:,} | "
            f"{r['per_s']:,.0f} | {r['seconds']:.2f} | {r['alert_changes']} | {r['stalls']} | "
            f"{r['peak_rss_mb']:.0f} MB | {r['load']:.2f} |"
        )
    t2 = [
        "| linger_s | snapshot_every_s | readings | readings/s | alerts | p50 | p99 | max | "
        "over 100 ms | other alerts |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in lat:
        t2.append(
            f"| {r['linger_s']:g} | {r['snapshot_every_s']:g} | {r['readings']:,} | "
            f"{r['rate']:,.0f} | {r['alerts']} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | "
            f"{r['max_ms']:.1f} ms | {r['over_100ms']} | {r['unexpected']} |"
        )
    t3 = [
        "| device type | devices | readings fed | checkpoints | bytes/device | open alerts | "
        "snapshot bytes/device | dump | load |",
        "|---|---:|---:|---|---|---|---:|---:|---:|",
    ]
    for m in mem:
        t3.append(
            f"| {m.label} | {m.devices:,} | {m.readings:,} | {' / '.join(m.bytes_at)} | "
            f"{' / '.join(f'{v:,.0f}' for v in m.bytes_at.values())} | "
            f"{' / '.join(map(str, m.open_at.values()))} | {m.snapshot_bytes:,.0f} | "
            f"{m.dump_ms:,.0f} ms | {m.load_ms:,.0f} ms |"
        )
    fleet = mem[:-1]
    devices = sum(m.devices for m in fleet)
    total = sum(list(m.bytes_at.values())[-1] * m.devices for m in fleet)
    snap = sum(m.snapshot_bytes * m.devices for m in fleet)
    dump_ms, load_ms = sum(m.dump_ms for m in fleet), sum(m.load_ms for m in fleet)
    servers = " and ".join(
        _version(*v) for v in (("mosquitto", "mosquitto", "-h"), ("influxd", "influxdb", "version"))
    )
    mixed = ", ".join(f"{t} {s:.0%}" for t, s in SHARES.items())
    met = "met" if ratio >= 0.85 else "**missed**"
    default_ratio = default_on["per_s"] / default_off["per_s"]
    met_default = "met" if default_ratio >= 0.85 else "**missed**"
    met_p99 = "met" if lat[0]["p99_ms"] < 100 else "**missed**"
    by_rule = ", ".join(f"`{k}` {v}" for k, v in sorted(rounds[0]["by_rule"].items()))
    stalled = (
        f"{default_on['stalls']} of its {default_on['seconds']:.0f} s were 10 s stalls, not "
        "the rules' evaluation: while the backlog is larger than the window, paho's network "
        "thread parks in `MqttSource._on_message` with telemetry queued in the socket ahead of "
        "the broker's PUBACKs for the alert notifications, and `Ingest._announce` waits for "
        "those PUBACKs before acknowledging the batch, until its 10 s timeout. So every batch "
        "that changes an alert during a backlog (after an outage or a restart) stalls 10 s."
        if default_on["stalls"]
        else "No stalls: the backlog fit in the window."
    )
    return f"""# Alert rules: throughput cost, latency, memory

{datetime.date.today().isoformat()}, on {machine()}; {servers} on loopback. Load average \
{loads[0]:.2f} at the start, {loads[1]:.2f} at the end (other people's test suites share \
this machine).

Reproduce: `.venv/bin/{command}` ({args.minutes:.1f} minutes)

## 1. Ingest throughput, rules on against rules off

{args.readings:,} single-reading QoS 1 messages wait at the broker for ingest's persistent \
session; ingest then starts in its own process and is timed until it has handled all of them. \
Readings: all eight types ({mixed}), from the simulators with seed {args.seed}, two days of \
reading time ending now, one reading per device every 10 min (blood pressure twice a day), a \
random episode about once a day per device and one device in ten offline for 3 h. Rules on = \
every type's default rules; off = `IngestOptions(alert_rules=False)`. Every round: a fresh \
database and session, and InfluxDB then holds exactly {args.readings:,} readings (no loss, no \
duplicates, no rejections) or the benchmark stops.

Rounds 1–{len(wide) // 2} run with `IngestOptions(window={WIDE_WINDOW:,})`, MQTT's largest \
Receive Maximum, above the backlog; the last round with the defaults \
(`window={DEFAULT_WINDOW:,}`). "10 s stalls" counts ingest's warning "the broker did not \
confirm N alert notifications within 10 s".

{chr(10).join(t1)}

What evaluating the rules costs (rounds 1–{len(wide) // 2}): rules on median \
{statistics.median(on):,.0f} readings/s (range {min(on):,.0f}–{max(on):,.0f}), off median \
{statistics.median(off):,.0f} (range {min(off):,.0f}–{max(off):,.0f}); ratio on/off per \
round {", ".join(f"{r:.2f}" for r in ratios)}, median **{ratio:.2f}** (target ≥ 0.85: {met}).
Alert changes stored in a rules-on round, by rule: {by_rule}.

With IngestOptions' defaults (the last round): ratio **{default_ratio:.3f}** \
(target: {met_default}). {stalled}

## 2. Publish → alert latency

{lat[0]["readings"]:,} readings at {args.rate:,.0f}/s: background devices of all eight types \
(each type's example reading, every {args.warmup:g} s each; the first {args.warmup:g} s are \
warm-up, so every background device is known), and for {args.duration:g} s \
{2 * args.alerting} alerting devices at one reading a second: {args.alerting} cows (3 readings \
at 40 °C raise `fever`, 3 at 38.6 resolve it) and {args.alerting} pacemakers (160 bpm raises \
`tachycardia`, 3 readings at 70 resolve it). Delay = from just before publishing the reading \
that completed the condition to the alert's arrival at a subscriber on `{{prefix}}/+/alerts/+` \
(matched on device id and the alert's `ts`); every expected alert arrived. Ingest runs with the \
default rules in its own process; the first row is IngestOptions' defaults, the others change \
only what the columns say.

{chr(10).join(t2)}

Target p99 < 100 ms with the defaults: {met_p99}. Rows 1 and 2 differ in `linger_s`: at this \
rate a batch never fills (2,000 messages), so every batch waits the whole linger before it is \
handled, which adds up to `linger_s` to each alert. Rows 2 and 3 differ in the alert-state \
snapshot: every `snapshot_every_s` `Ingest._consume` runs `snapshot.dump` of every device on \
the event loop and then waits for the fsynced write, handling no batch meanwhile (section 3 \
shows how long a dump takes per device); the alerts that arrive then wait for it, which is \
about 1 % of them when the run contains one snapshot.

## 3. Alert engine memory per device

One `AlertEngine` per type with the default rules, fed in this process one reading per device \
per hour of reading time, so every baseline slot fills (the reading rate does not change what \
a device keeps, except the samples in a delta window); values replayed from 64 simulated \
devices per type with a random episode about every two days. Bytes = what tracemalloc counts \
as still held after `gc.collect()` (devices, rule state, open episodes, indexes, ids) per \
device, at each checkpoint; it moves only with the number of open episodes. The last row is a \
delta window at its cap: thermostats heating for hours without warming, a reading a minute, so \
the 1 h window keeps its 34 samples. Snapshot = `snapshot.dump` (what ingest writes every 30 s), \
timed with tracing off; load = `snapshot.load` into a fresh engine.

{chr(10).join(t3)}

All types together (first {len(fleet)} rows): {devices:,} devices, \
{total / 1e6:,.1f} MB of alert state ({total / devices:,.0f} bytes/device); snapshot \
{snap / 1e6:,.1f} MB ({snap / devices:,.0f} bytes/device), dumped in {dump_ms:,.0f} ms and \
loaded in {load_ms:,.0f} ms.
"""


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
    parser.add_argument("--out", default="benchmarks/results/alerts.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("child_args", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        configure_logging()  # as `moclo ingest` does; stderr goes to a log file
        child = orjson.loads(args.child_args)
        settings = Settings(**child["settings"])
        if args.child == "drain":
            done = drain(settings, child["expected"], child["rules"], child["window"])
            print(orjson.dumps(done).decode())
        else:
            _serve_live(settings, IngestOptions(**child["options"]))
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
        for i, (linger, every) in enumerate(VARIANTS):
            progress(f"latency at {args.rate:,.0f}/s, linger_s={linger:g}, snapshot {every:g} s…")
            load = LiveLoad(args.rate, args.duration, args.warmup, args.alerting, linger, every)
            lat.append(latency(servers, load, f"live{i + 1}"))
            progress(f"  {lat[-1]}")
    progress(f"memory: {args.cows:,} cows and {args.others:,} others…")
    mem = memory(args.cows, args.others, progress)
    args.minutes = (time.monotonic() - began) / 60
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python -m benchmarks.alerts", *given])
    text = report(args, command, rounds, lat, mem, (load_at_start, os.getloadavg()[0]))
    if args.out == "-":
        print(text)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        progress(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
