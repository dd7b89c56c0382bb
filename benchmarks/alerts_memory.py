"""Section 3 of the alert benchmark: what the alert engine keeps per device, and its snapshot.

One `AlertEngine` per device type with the default rules, fed in this process days of readings
per device, measured with tracemalloc after 2 and after 4 days; then the snapshot's size and
how long `snapshot.dump` and `snapshot.load` take for the whole engine.
"""

from __future__ import annotations

import gc
import math
import random
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.alerts_stack import DAY, TENANTS, BenchmarkFailed
from devices.base import Reading
from devices.catalogue import DEVICE_TYPES
from devices.topics import DeviceAddress
from ingest.alerts import AlertEngine, snapshot
from ingest.decode import ValidReading
from simulators.catalogue import BEHAVIOURS


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
