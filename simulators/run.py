"""`moclo simulate`: a fleet, a clock and a publisher, run until the duration is over."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from moclo.mqtt import MqttEndpoint
from simulators.clock import Clock, SimulatedClock, WallClock
from simulators.fleet import Fleet
from simulators.publisher import MqttPublisher


@dataclass(frozen=True, slots=True)
class SimulationOptions:
    devices: dict[str, int]
    tenant: str = "demo-farm"
    interval_s: float = 1.0
    duration_s: float | None = 30.0  # None: until stopped
    seed: int = 0
    qos: int = 1
    burst: bool = False  # simulated time, as fast as the broker takes it
    start: float | None = None  # epoch seconds of the first reading; default: see run_simulation
    readings_per_message: int = 1
    incident_every_s: float | None = None


@dataclass(slots=True)
class SimulationResult:
    devices: int
    seed: int
    messages: int = 0
    readings: int = 0
    elapsed_s: float = 0.0
    acknowledged: bool = False
    first_ts: float = 0.0
    last_ts: float = field(default=0.0)


Progress = Callable[[SimulationResult], None]


def run_simulation(
    endpoint: MqttEndpoint,
    prefix: str,
    options: SimulationOptions,
    *,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    progress_every_s: float = 2.0,
) -> SimulationResult:
    """Publishes the fleet's readings; returns counts once all were acknowledged by the broker."""
    stop = stop or threading.Event()
    start = options.start
    if start is None:
        # A burst replays the period that ends now (a backfill), so its readings are never
        # in the future; a real-time run starts now.
        span = (options.duration_s or 0.0) if options.burst else 0.0
        start = time.time() - span
    clock: Clock = SimulatedClock(start) if options.burst else WallClock()
    fleet = Fleet(
        options.devices,
        tenant=options.tenant,
        prefix=prefix,
        seed=options.seed,
        start=start,
        interval_s=options.interval_s,
        incident_every_s=options.incident_every_s,
    )
    result = SimulationResult(devices=len(fleet.devices), seed=options.seed, first_ts=start)
    publisher = MqttPublisher(
        endpoint,
        client_id=f"moclo-sim-{options.tenant}-{os.getpid()}-{options.seed}",
        qos=options.qos,
    )
    publisher.start()
    began = time.monotonic()
    next_progress = began + progress_every_s
    try:
        for topic, payload, readings in fleet.messages(
            clock,
            stop,
            rounds=fleet.rounds_for(options.duration_s),
            readings_per_message=options.readings_per_message,
        ):
            publisher.publish(topic, payload)
            result.messages += 1
            result.readings += readings
            result.last_ts = clock.now()
            if progress is not None and time.monotonic() >= next_progress:
                next_progress = time.monotonic() + progress_every_s
                result.elapsed_s = time.monotonic() - began
                progress(result)
        result.acknowledged = publisher.flush()
    finally:
        publisher.close()
    result.elapsed_s = time.monotonic() - began
    return result
