"""`moclo simulate`: a fleet, a clock and a publisher, run until the duration is over."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from core.durations import parse_duration
from core.mqtt import MqttEndpoint
from devices.base import parse_timestamp
from simulators.clock import Clock, ScaledClock, SimulatedClock, WallClock
from simulators.connections import DeviceConnections
from simulators.downlink import CommandFaults
from simulators.faults import FaultRates
from simulators.fleet import Fleet, FleetSpec, SimulatedDevice
from simulators.publisher import MqttPublisher

UTC_OFFSET_S = 3600  # times of day are local on the farm and in the homes (UTC+1)
_TIME_OF_DAY = re.compile(r"(?:day\s+(\d+)\s+)?(\d{1,2}):(\d{2})")


@dataclass(frozen=True, slots=True)
class ScriptedEvent:
    """An episode a scenario puts on one device: `kind` from `at` for `duration_s`; `kind` is
    one of the type's episode kinds or `offline` (any type; see `SimulatedDevice`).

    `at` is epoch seconds, or text resolved against the run's start when it runs: "+3h",
    "06:00" (the first 06:00 at or after the start), "day 2 06:00", or RFC 3339."""

    tenant: str
    device_id: str
    kind: str
    at: float | str
    duration_s: float

    def starts_at(self, start: float) -> float:
        return self.at if isinstance(self.at, float | int) else event_time(self.at, start)


def event_time(text: str, start: float) -> float:
    """An event time: "+3h", "06:00", "day 2 06:00", or RFC 3339."""
    text = text.strip()
    if text.startswith("+"):
        return start + parse_duration(text[1:])
    if match := _TIME_OF_DAY.fullmatch(text):
        day, hours, minutes = int(match.group(1) or 1), int(match.group(2)), int(match.group(3))
        if day < 1 or hours > 23 or minutes > 59:
            raise ValueError(f"event time {text!r}: day from 1, hours 0..23, minutes 0..59")
        # The first such time of day at or after the start is day 1.
        local_midnight = (start + UTC_OFFSET_S) // 86_400 * 86_400 - UTC_OFFSET_S
        first = local_midnight + hours * 3600 + minutes * 60
        if first < start:
            first += 86_400
        return first + (day - 1) * 86_400
    try:
        return parse_timestamp(text) / 1e9
    except ValueError:
        raise ValueError(
            f"event time {text!r}: write +3h, 06:00, day 2 06:00 or an RFC 3339 time"
        ) from None


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
    # With per-device connections: a cluster's MQTT listeners (host, port) to spread the
    # devices over (device i at node i mod n); empty: all at the endpoint.
    nodes: tuple[tuple[str, int], ...] = ()
    # Devices obey commands and desired state (simulators/downlink.py); faults imply it.
    obey: bool = False
    command_faults: CommandFaults | None = None

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ValueError("connections must be at least 1")
        if self.speed <= 0:
            raise ValueError("speed must be positive")
        if self.faults is not None and self.faults.any() and self.readings_per_message > 1:
            # Faults shape each device's messages themselves (a silence ends in a burst).
            raise ValueError("faults and readings per message (--batch) cannot be combined")

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
    dropped: int = 0  # QoS 0 readings a disconnected connection could not send
    faults: dict[str, int] = field(default_factory=dict)  # injected, by fault
    # Readings not made because a device was scripted offline: `produced` plus this is what
    # the same run without the outages would have produced.
    offline_skipped: int = 0
    # What obeying devices did with commands and desired state: executed, repeated (a
    # command id seen before: the first answer sent again), expired, ignored and
    # fault_rejected (--command-faults), desired_applied, ...
    commands: dict[str, int] = field(default_factory=dict)


Progress = Callable[[SimulationResult], None]


def build_fleet(options: SimulationOptions, prefix: str, start: float) -> Fleet:
    """The fleet with the scenario's scripted events put on its devices."""
    fleet = Fleet(
        options.fleet_specs(),
        prefix=prefix,
        seed=options.seed,
        start=start,
        faults=options.faults,
        obey=options.obey or (options.command_faults is not None and options.command_faults.any()),
        command_faults=options.command_faults,
    )
    for event in options.events:
        device = fleet.device(event.tenant, event.device_id)
        device.add_episode(event.kind, event.starts_at(start), event.duration_s)
    return fleet


Publisher = MqttPublisher | DeviceConnections
Route = dict[int, Callable[[str, bytes, threading.Event], bool]]


def _connect(
    endpoint: MqttEndpoint, options: SimulationOptions, fleet: Fleet
) -> tuple[list[Publisher], Route]:
    """The connections, and which one publishes for which device."""
    if options.per_device_connections:
        # As real devices: each its own connection, client id "tenant.device-id".
        ids = {id(d): f"{d.tenant}.{d.device_id}" for d in fleet.devices}
        connections = DeviceConnections(
            endpoint,
            list(ids.values()),
            qos=options.qos,
            credentials=options.credentials,
            nodes=options.nodes,
            downlinks={ids[id(d)]: d.downlink for d in fleet.devices if d.downlink},
        )
        fleet.presence = partial(_device_presence, connections, ids)
        connections.start()
        route: Route = {key: partial(connections.publish, cid) for key, cid in ids.items()}
        return [connections], route
    # Gateway mode: the devices share `connections` connections, device i on i mod n.
    run_id = f"moclo-sim-{os.getpid()}-{options.seed}-{time.monotonic_ns()}"
    n = options.connections
    publishers = [
        MqttPublisher(
            endpoint,
            client_id=f"{run_id}-{k}",
            qos=options.qos,
            downlinks=[d.downlink for d in fleet.devices[k::n] if d.downlink],
        )
        for k in range(n)
    ]
    for publisher in publishers:
        publisher.start()
    serving = {id(d): publishers[i % n] for i, d in enumerate(fleet.devices)}
    fleet.presence = partial(_shared_presence, serving)
    route = {key: publisher.publish for key, publisher in serving.items()}
    return list(publishers), route


def _device_presence(
    connections: DeviceConnections,
    ids: dict[int, str],
    device: SimulatedDevice,
    online: bool,
    t: float,
) -> None:
    """An obeying device scripted offline drops its connection, and reconnects when back."""
    if device.downlink is not None:
        (connections.unpark if online else connections.park)(ids[id(device)])


def _shared_presence(
    serving: dict[int, MqttPublisher], device: SimulatedDevice, online: bool, t: float
) -> None:
    """Behind a shared connection, an offline device's downlink holds what arrives for it
    (as a gateway holds messages for a sleeping device) and handles it when it is back."""
    if device.downlink is None:
        return
    if not online:
        device.downlink.go_offline()
        return
    for topic, payload in device.downlink.come_back(t):
        serving[id(device)].publish(topic, payload, qos=1)


def _tally(result: SimulationResult, fleet: Fleet) -> SimulationResult:
    """What the devices did so far, beyond what was published: faults, commands, outages."""
    result.faults = dict(fleet.fault_counts)
    result.commands = dict(fleet.command_counts)
    result.offline_skipped = sum(device.offline_skipped for device in fleet.devices)
    return result


def run_simulation(
    endpoint: MqttEndpoint,
    prefix: str,
    options: SimulationOptions,
    *,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    progress_every_s: float = 2.0,
    clock: Clock | None = None,
    abort: threading.Event | None = None,
) -> SimulationResult:
    """Publishes the fleet's readings; returns counts once all were acknowledged by the broker."""
    stop = stop or threading.Event()  # stop making readings; send what devices hold
    abort = abort or threading.Event()  # stop sending, too (the broker may be gone)
    start = options.resolved_start(time.time())
    fleet = build_fleet(options, prefix, start)
    publishers, route = _connect(endpoint, options, fleet)
    if options.start is None and not options.burst:
        # A run in real (or scaled) time starts its schedule once every device is connected,
        # which for thousands of connections takes a moment.
        fleet.start = start = options.resolved_start(time.time())
    clock = clock or _clock(options, start)
    for publisher in publishers:
        publisher.now = clock.now  # obeying devices judge expiry by the simulation's time
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
            if not route[id(device)](device.topic, payload, abort):
                if abort.is_set():
                    break  # a second Ctrl-C, or the caller gave up: leave now
                result.dropped += readings  # QoS 0 while the connection was down
                continue
            result.messages += 1
            result.readings += readings
            result.by_type[device.device_type] = (
                result.by_type.get(device.device_type, 0) + readings
            )
            result.last_ts = clock.now()
            if progress is not None and time.monotonic() >= next_progress:
                next_progress = time.monotonic() + progress_every_s
                result.elapsed_s = time.monotonic() - began
                progress(_tally(result, fleet))
        # Every one, even after a miss.
        flushed = [publisher.flush(abort=abort) for publisher in publishers]
        result.acknowledged = all(flushed) and not abort.is_set()
    finally:
        for publisher in publishers:
            publisher.close()
        result.produced = sum(device.seq for device in fleet.devices)
        _tally(result, fleet)
    result.elapsed_s = time.monotonic() - began
    return result


def _clock(options: SimulationOptions, start: float) -> Clock:
    """The clock of a run: simulated for a burst, scaled for a speed, else the wall's."""
    if options.burst:
        return SimulatedClock(start)
    if options.speed != 1.0:
        return ScaledClock(start, options.speed)
    return WallClock()
