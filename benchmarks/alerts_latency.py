"""Section 2 of the alert benchmark: publish → alert latency at a steady rate.

Ingest runs in its own process with the default rules; a publisher sends background readings of
every type and, after a warm-up, readings from devices that cross thresholds (fever cows,
pacemakers in and out of tachycardia) with real-time timestamps; a subscriber notes when each
expected alert arrives. The ingest process also reports when each periodic alert-state
snapshot was captured and written, so the alerts in flight meanwhile can be singled out.
"""

from __future__ import annotations

import asyncio
import gc
import math
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho

from benchmarks.alerts_stack import ROOT, TENANTS, BenchmarkFailed, Servers, child_command
from benchmarks.stored_latency import StoredWatcher
from core.mqtt import MqttEndpoint, make_client
from core.settings import Settings
from devices.base import parse_timestamp
from devices.catalogue import DEVICE_TYPES
from devices.rfc3339 import format_us
from devices.topics import alert_subscription, telemetry_topic
from ingest.alert_state import AlertState
from ingest.options import IngestOptions
from ingest.service import Ingest
from simulators.publisher import MqttPublisher

_DEFAULTS = IngestOptions()
# The latency runs: (linger_s, snapshot_every_s). IngestOptions' defaults first, then the old
# default linger (0.1 s), then the defaults with no periodic snapshot during the run.
VARIANTS = (
    (_DEFAULTS.linger_s, _DEFAULTS.snapshot_every_s),
    (0.1, _DEFAULTS.snapshot_every_s),
    (_DEFAULTS.linger_s, 3600.0),
)


def snapshot_period(every_s: float, run_s: float) -> float:
    """`every_s`, or half the run when the run would not contain a whole period with a few
    seconds to spare (a short run, e.g. --quick): a variant meant to show what a snapshot
    costs must contain one. Periods of an hour or more mean "no snapshot" and stay."""
    if every_s >= 3600 or every_s <= run_s - 5:
        return every_s
    return max(1.0, round(run_s / 2))


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
    readings: int = 1  # per message: more than one makes each message an array

    def payload(self, ts: float) -> bytes:
        fields = {**DEVICE_TYPES[self.device_type].example, "ts": ts, "seq": self.seq}
        if self.pattern is not None:
            fields |= self.pattern(self.seq)
        self.seq += 1
        return orjson.dumps(fields)

    def message(self, ts: float) -> bytes:
        """One reading, or an array of `readings` readings a microsecond apart from `ts` (a
        reading's identity in InfluxDB is its series and timestamp: they must differ)."""
        if self.readings == 1:
            return self.payload(ts)
        return b"[" + b",".join(self.payload(ts + k / 1e6) for k in range(self.readings)) + b"]"


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


@dataclass(frozen=True, slots=True)
class LiveLoad:
    rate: float = 1_000.0  # readings/s, all devices together
    duration_s: float = 30.0  # measured: the alerting devices publish for this long
    warmup_s: float = 10.0  # background only: every background device reports once first
    alerting: int = 20  # cows and pacemakers each: 6.7 + 10 alert changes a second
    linger_s: float = _DEFAULTS.linger_s
    snapshot_every_s: float = _DEFAULTS.snapshot_every_s
    # Readings in each background message (arrays when more than one): one publisher manages
    # only some thousands of QoS 1 messages a second here, and fewer messages mean fewer new
    # devices for the same rate (rate / per_message × warmup_s of them).
    per_message: int = 1


def schedule(load: LiveLoad) -> list[tuple[float, LiveDevice]]:
    """(seconds from the start, device), in time order: background devices of every type, each
    every `warmup_s` (a message of `per_message` readings), and from then on the alerting
    devices once a second each (one reading)."""
    alerting = [fever_cow(i) for i in range(load.alerting)] + [
        racing_heart(i) for i in range(load.alerting)
    ]
    background_rate = load.rate - len(alerting)
    message_rate = background_rate / load.per_message
    count = max(1, round(message_rate * load.warmup_s))
    types = list(DEVICE_TYPES)
    background = [
        LiveDevice(
            types[i % len(types)],
            TENANTS[types[i % len(types)]],
            f"bg-{i:05d}",
            readings=load.per_message,
        )
        for i in range(count)
    ]
    events = [
        (k * load.warmup_s + i / message_rate, device)
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


# -- the ingest process -------------------------------------------------------------------------


class _ObservedAlertState(AlertState):
    """The alert state as it is, noting (in time.monotonic(), which is system-wide on Linux, so
    the parent can compare) when each slice of a periodic snapshot ran and when its write
    ended."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.snapshots: list[dict[str, Any]] = []
        self._current: dict[str, Any] | None = None

    def step(self, budget_s: float) -> None:
        began = time.monotonic()
        super().step(budget_s)
        ended = time.monotonic()
        if self._current is None:
            self._current = {"began": began, "slices": 0, "longest_slice_ms": 0.0}
            self.snapshots.append(self._current)
        current = self._current
        current["slices"] += 1
        current["longest_slice_ms"] = max(current["longest_slice_ms"], (ended - began) * 1000)
        if not self.capturing:  # captured; `step` has started writing it
            current["captured"] = ended
            self._current = None
            if self._writing is not None:
                self._writing.add_done_callback(
                    lambda _: current.__setitem__("written", time.monotonic())
                )


class _ObservedIngest(Ingest):
    """Ingest as it is, with its alert state observed (`_ObservedAlertState`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        observed = _ObservedAlertState(self.alert_state.path, self.pipeline)
        self.alert_state = self.consumer.alert_state = observed
        self.snapshots = observed.snapshots


class _GcPauses:
    """Notes each garbage collection in this process that takes 5 ms or more: a pause of the
    event loop that ingest does not choose, unlike a snapshot slice."""

    def __init__(self) -> None:
        self.pauses: list[dict[str, Any]] = []
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.monotonic()
        elif (ms := (time.monotonic() - self._began) * 1000) >= 5:
            self.pauses.append({"began": self._began, "ms": ms, "generation": info["generation"]})


def serve_live(settings: Settings, options: IngestOptions) -> None:
    """The child's side of `live_ingest`: prints "ready", runs until SIGTERM, then prints the
    periodic snapshots it took and its garbage-collection pauses as one JSON line."""
    pauses = _GcPauses()
    gc.callbacks.append(pauses)

    async def main() -> list[dict[str, Any]]:
        stop, ready = asyncio.Event(), asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        ingest = _ObservedIngest(settings, stop, options=options)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(ingest.run(ready), name="ingest")
            await ready.wait()
            print("ready", flush=True)
        return ingest.snapshots

    snapshots = asyncio.run(main())
    gc.callbacks.remove(pauses)
    print(orjson.dumps({"snapshots": snapshots, "gc": pauses.pauses}).decode(), flush=True)


@contextmanager
def live_ingest(
    settings: Settings, options: dict[str, float], log_path: Path
) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """`Ingest` with the default rules in a child process, from subscribed to stopped; yields
    a dict that holds, once the child has stopped, its periodic snapshots ("snapshots") and
    its garbage-collection pauses ("gc"), times in time.monotonic()."""
    args = {"settings": settings.model_dump(), "options": options}
    observed: dict[str, list[dict[str, Any]]] = {}
    with (
        log_path.open("wb") as log,
        subprocess.Popen(
            child_command("live", args), stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT
        ) as child,
    ):
        assert child.stdout is not None
        try:
            ready, _, _ = select.select([child.stdout], [], [], 60)
            if not ready or child.stdout.readline().strip() != "ready":
                raise BenchmarkFailed(f"ingest did not start; see {log_path}")
            yield observed
        finally:
            child.send_signal(signal.SIGTERM)
            rest, _ = child.communicate(timeout=60)
        if child.returncode != 0 or not rest.strip():
            raise BenchmarkFailed(f"ingest exited with {child.returncode}; see {log_path}")
        observed |= orjson.loads(rest.strip().splitlines()[-1])


# -- the run ------------------------------------------------------------------------------------


def latency(
    servers: Servers, load: LiveLoad, name: str, *, watch_stored: bool = False
) -> dict[str, Any]:
    """Ingest running; a steady stream with alerting devices; each expected alert's delay, and
    the periodic snapshots during the run with the alerts in flight meanwhile. With
    `watch_stored`, also every reading's publish → stored delay (`benchmarks/stored_latency.py`;
    its polling loads InfluxDB and a core, so alert delays of such a run are not comparable)."""
    settings = servers.settings(name)
    plan = schedule(load)
    readings = sum(device.readings for _, device in plan)
    expected: dict[tuple[str, str], float] = {}  # (device id, reading ts) → when published
    endpoint = MqttEndpoint.from_url(servers.mqtt_url)
    options = {"linger_s": load.linger_s, "snapshot_every_s": load.snapshot_every_s}
    with live_ingest(settings, options, servers.workdir / f"{name}.log") as observed:
        watcher = AlertWatcher(servers.mqtt_url, settings.topic_prefix)
        stored = StoredWatcher(settings) if watch_stored else None
        if stored is not None:
            stored.start()
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
                payload = device.message(ts)
                topic = telemetry_topic(
                    settings.topic_prefix, device.tenant, device.device_type, device.device_id
                )
                sent = time.monotonic()
                publisher.publish(topic, payload)
                if completes:
                    expected[(device.device_id, format_us(parse_timestamp(ts)))] = sent
            seconds = time.monotonic() - began
            ended = began + seconds
            if not publisher.flush(timeout_s=60):
                raise BenchmarkFailed("the broker did not acknowledge every reading")
            deadline = time.monotonic() + 30
            while len(watcher.arrived) < len(expected) and time.monotonic() < deadline:
                time.sleep(0.05)  # waiting for the last alerts, under a deadline
            if stored is not None:
                stored.stop(expected=readings)
        finally:
            publisher.close()
            watcher.close()
    flights: list[tuple[float, float]] = []  # (published, arrived) of each expected alert
    slowest: list[tuple[float, float, str]] = []  # (delay ms, published s into the run, device)
    unexpected = 0
    for arrived, device_id, alert_ts in watcher.arrived:
        sent_at = expected.pop((device_id, alert_ts), None)
        if sent_at is None:
            unexpected += 1
        else:
            flights.append((sent_at, arrived))
            slowest.append(((arrived - sent_at) * 1000, sent_at - began, device_id))
    if expected:
        missing = next(iter(expected))
        raise BenchmarkFailed(f"{len(expected)} expected alerts never arrived, e.g. {missing}")
    in_run = [s for s in observed["snapshots"] if began <= s["began"] < ended]
    if load.snapshot_every_s < seconds - 1 and not in_run:
        raise BenchmarkFailed(
            f"no alert-state snapshot during the {seconds:.0f} s run, though "
            f"snapshot_every_s={load.snapshot_every_s:g}; see {servers.workdir / name}.log"
        )
    delays = sorted((arrived - sent) * 1000 for sent, arrived in flights)
    return {
        "linger_s": load.linger_s,
        "snapshot_every_s": load.snapshot_every_s,
        "readings": readings,
        "messages": len(plan),
        "rate": readings / seconds,
        "alerts": len(delays),
        "unexpected": unexpected,
        "p50_ms": percentile(delays, 50),
        "p99_ms": percentile(delays, 99),
        "max_ms": delays[-1],
        "over_100ms": sum(d > 100 for d in delays),
        "stored": stored.summary() if stored is not None else None,
        "snapshots": [_snapshot_row(s, began, flights) for s in in_run],
        "slowest": sorted(slowest, reverse=True)[:5],
        "gc_pauses": [
            _gc_row(p, began, flights) for p in observed["gc"] if began <= p["began"] < ended
        ],
    }


def _snapshot_row(
    taken: dict[str, Any], began: float, flights: list[tuple[float, float]]
) -> dict[str, Any]:
    """One periodic snapshot, in ms and in seconds from the run's start, with the expected
    alerts that were in flight (published, not yet arrived) while it was captured or written."""
    captured = taken.get("captured", math.inf)
    written = taken.get("written", captured)
    during = [(a - s) * 1000 for s, a in flights if s <= written and a >= taken["began"]]
    return {
        "at_s": taken["began"] - began,
        "capture_ms": (captured - taken["began"]) * 1000,
        "slices": taken["slices"],
        "longest_slice_ms": taken["longest_slice_ms"],
        "write_ms": (written - captured) * 1000,
        "alerts_in_flight": len(during),
        "their_max_ms": max(during, default=0.0),
    }


def _gc_row(
    pause: dict[str, Any], began: float, flights: list[tuple[float, float]]
) -> dict[str, Any]:
    """One garbage collection in ingest, with the expected alerts in flight meanwhile."""
    ended = pause["began"] + pause["ms"] / 1000
    during = [(a - s) * 1000 for s, a in flights if s <= ended and a >= pause["began"]]
    return {
        "at_s": pause["began"] - began,
        "ms": pause["ms"],
        "generation": pause["generation"],
        "alerts_in_flight": len(during),
        "their_max_ms": max(during, default=0.0),
    }


def percentile(ordered: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def variants(
    rate: float, duration_s: float, warmup_s: float, alerting: int
) -> list[tuple[LiveLoad, float]]:
    """Each of VARIANTS as a LiveLoad, with the snapshot period it asked for (the load's is
    lower when the run is too short for it; see `snapshot_period`)."""
    out = []
    for linger, every in VARIANTS:
        period = snapshot_period(every, warmup_s + duration_s)
        out.append((LiveLoad(rate, duration_s, warmup_s, alerting, linger, period), every))
    return out
