"""`moclo simulate`: a fleet, a clock and a publisher, run until the duration is over."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from moclo.mqtt import MqttEndpoint
from simulators.catalogue import BEHAVIOURS
from simulators.clock import Clock, ScaledClock, SimulatedClock, WallClock
from simulators.connections import DeviceConnections
from simulators.faults import FaultRates
from simulators.fleet import Fleet, FleetError, FleetSpec
from simulators.publisher import MqttPublisher


@dataclass(frozen=True, slots=True)
class ScriptedEvent:
    """An episode a scenario puts on one device: `kind` from `at` (epoch s) for `duration_s`."""

    tenant: str
    device_id: str
    kind: str
    at: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class SimulationOptions:
    # The simple form (the command line): one tenant, counts per type ...
    devices: dict[str, int] = field(default_factory=dict)
    tenant: str = "demo-farm"
    interval_s: float | None = None  # None: each type's own default
    incident_every_s: float | None = None
    # ... or the full form (a scenario file): fleets for any number of tenants.
    fleets: tuple[FleetSpec, ...] = ()
    events: tuple[ScriptedEvent, ...] = ()
    duration_s: float | None = 30.0  # simulated time to cover; None: until stopped
    seed: int = 0
    qos: int = 1
    burst: bool = False  # simulated time, as fast as the broker takes it
    speed: float = 1.0  # simulated seconds per wall-clock second, when not a burst
    start: float | None = None  # epoch seconds of the simulation's start; default: see below
    readings_per_message: int = 1
    faults: FaultRates | None = None
    connections: int = 1  # MQTT connections the devices share (gateway mode)
    per_device_connections: bool = False  # instead, one connection per device
    # With per-device connections: client id "tenant.device-id" → (username, password).
    credentials: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ValueError("connections must be at least 1")

    def fleet_specs(self) -> list[FleetSpec]:
        if self.fleets:
            return list(self.fleets)
        return [
            FleetSpec(
                self.tenant,
                device_type,
                count,
                self.interval_s,
                incident_every_s=self.incident_every_s,
            )
            for device_type, count in self.devices.items()
        ]

    def resolved_start(self, now: float) -> float:
        """By default the simulated period ends now, so no reading is from the future (ingest
        refuses readings more than 10 minutes ahead): a real-time run starts now, a burst or a
        sped-up run starts as far back as it will run ahead."""
        if self.start is not None:
            return self.start
        if self.duration_s is None:
            return now
        if self.burst:
            return now - self.duration_s
        return now - self.duration_s + self.duration_s / self.speed


@dataclass(slots=True)
class SimulationResult:
    devices: int
    seed: int
    messages: int = 0
    readings: int = 0
    elapsed_s: float = 0.0
    acknowledged: bool = False
    first_ts: float = 0.0
    last_ts: float = 0.0
    by_type: dict[str, int] = field(default_factory=dict)
    produced: int = 0  # readings the devices produced (before faults shaped what was sent)
    connections: int = 0  # MQTT connections open to the broker
    faults: dict[str, int] = field(default_factory=dict)  # injected, by fault


Progress = Callable[[SimulationResult], None]


def build_fleet(options: SimulationOptions, prefix: str, start: float) -> Fleet:
    """The fleet with the scenario's scripted events put on its devices."""
    fleet = Fleet(
        options.fleet_specs(),
        prefix=prefix,
        seed=options.seed,
        start=start,
        faults=options.faults,
    )
    for event in options.events:
        device = fleet.device(event.tenant, event.device_id)
        kinds = BEHAVIOURS[device.device_type].episode_kinds
        if event.kind not in kinds:
            raise FleetError(
                f"{device.device_type} has no event {event.kind!r}; it has: {', '.join(kinds)}"
            )
        device.behaviour.episodes.add(event.kind, event.at, event.duration_s)
    return fleet


Publisher = MqttPublisher | DeviceConnections
Route = dict[int, Callable[[str, bytes], None]]


def _connect(
    endpoint: MqttEndpoint, options: SimulationOptions, fleet: Fleet
) -> tuple[list[Publisher], Route]:
    """The connections, and which one publishes for which device."""
    if options.per_device_connections:
        # As real devices: each its own connection, client id "tenant.device-id".
        ids = {id(d): f"{d.tenant}.{d.device_id}" for d in fleet.devices}
        connections = DeviceConnections(
            endpoint, list(ids.values()), qos=options.qos, credentials=options.credentials
        )
        connections.start()
        route: Route = {key: partial(connections.publish, cid) for key, cid in ids.items()}
        return [connections], route
    # Gateway mode: the devices share `connections` connections, device i on i mod n.
    run_id = f"moclo-sim-{os.getpid()}-{options.seed}-{time.monotonic_ns()}"
    publishers = [
        MqttPublisher(endpoint, client_id=f"{run_id}-{k}", qos=options.qos)
        for k in range(options.connections)
    ]
    for publisher in publishers:
        publisher.start()
    route = {id(d): publishers[i % len(publishers)].publish for i, d in enumerate(fleet.devices)}
    return list(publishers), route


def run_simulation(
    endpoint: MqttEndpoint,
    prefix: str,
    options: SimulationOptions,
    *,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    progress_every_s: float = 2.0,
    clock: Clock | None = None,
) -> SimulationResult:
    """Publishes the fleet's readings; returns counts once all were acknowledged by the broker."""
    stop = stop or threading.Event()
    start = options.resolved_start(time.time())
    fleet = build_fleet(options, prefix, start)
    publishers, route = _connect(endpoint, options, fleet)
    if options.start is None and not options.burst:
        # A run in real (or scaled) time starts its schedule once every device is connected,
        # which for thousands of connections takes a moment.
        fleet.start = start = options.resolved_start(time.time())
    if clock is None:
        if options.burst:
            clock = SimulatedClock(start)
        elif options.speed != 1.0:
            clock = ScaledClock(start, options.speed)
        else:
            clock = WallClock()
    result = SimulationResult(devices=len(fleet.devices), seed=options.seed, first_ts=start)
    result.connections = len(fleet.devices) if options.per_device_connections else len(publishers)
    began = time.monotonic()
    next_progress = began + progress_every_s
    try:
        for device, payload, readings in fleet.messages(
            clock,
            stop,
            duration_s=options.duration_s,
            readings_per_message=options.readings_per_message,
        ):
            route[id(device)](device.topic, payload)
            result.messages += 1
            result.readings += readings
            result.by_type[device.device_type] = (
                result.by_type.get(device.device_type, 0) + readings
            )
            result.last_ts = clock.now()
            if progress is not None and time.monotonic() >= next_progress:
                next_progress = time.monotonic() + progress_every_s
                result.elapsed_s = time.monotonic() - began
                result.faults = dict(fleet.fault_counts)
                progress(result)
        result.acknowledged = all(publisher.flush() for publisher in publishers)
    finally:
        for publisher in publishers:
            publisher.close()
        result.produced = sum(device.seq for device in fleet.devices)
        result.faults = dict(fleet.fault_counts)
    result.elapsed_s = time.monotonic() - began
    return result
