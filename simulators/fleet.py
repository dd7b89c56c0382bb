"""A fleet of simulated devices on one thread: thousands of devices, no thread per device.

Each device reports every `interval` at its own phase within the interval, so the load is
spread evenly; a heap orders the next reading of every device. Each device has its own random
generator seeded from (seed, tenant, type, number): the same seed gives the same readings, and
adding thermostats does not change the cows.

Any device can be scripted `offline` (its battery died, its Wi-Fi dropped): that is decided here,
in `SimulatedDevice.reading`, not by the behaviour models, so every type has it.

A fleet that obeys gives each device whose type has commands or a desired state a downlink
(simulators/downlink.py); `presence` hears when a device goes offline and comes back, so its
connection can go dark too (simulators/run.py).
"""

from __future__ import annotations

import heapq
import math
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson

from devices.catalogue import DEVICE_TYPES
from devices.topics import check_identifier, telemetry_topic
from simulators.behaviour import Behaviour, Obeys, Scheduled
from simulators.catalogue import BEHAVIOURS
from simulators.clock import Clock
from simulators.downlink import CommandFaults, DeviceDownlink
from simulators.faults import FaultInjector, FaultRates

OFFLINE = "offline"  # the scripted episode every device type has, besides its own


class FleetError(ValueError):
    """A fleet description that cannot be simulated; the message says what is allowed."""


def episode_kinds(device_type: str) -> tuple[str, ...]:
    """What a scenario may script for `device_type`: its behaviour's own kinds, and `offline`."""
    return (*BEHAVIOURS[device_type].episode_kinds, OFFLINE)


def parse_fleet(text: str) -> dict[str, int]:
    """`cow_tracker=50,thermostat=10` → {"cow_tracker": 50, "thermostat": 10}."""
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, number = part.partition("=")
        if not sep or not number.strip().isdigit():
            raise FleetError(f"{part!r}: write TYPE=COUNT, e.g. cow_tracker=50")
        name = name.strip()
        if name not in BEHAVIOURS:
            known = ", ".join(sorted(BEHAVIOURS))
            raise FleetError(f"{name!r} is not a simulated device type; known: {known}")
        counts[name] = counts.get(name, 0) + int(number)
    if not counts or sum(counts.values()) == 0:
        raise FleetError("the fleet is empty: give at least one device, e.g. cow_tracker=1")
    return counts


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """`count` devices of one type for one tenant."""

    tenant: str
    device_type: str
    count: int
    interval_s: float | None = None  # None: the type's own default
    id_pattern: str | None = None  # e.g. "cow-{n:04d}"; None: "{type prefix}-{n:04d}"
    incident_every_s: float | None = None


@dataclass(slots=True)
class SimulatedDevice:
    """One device of the fleet: its behaviour model, where it publishes, and what it holds.

    An `offline` episode (`add_episode("offline", ...)`) makes the device dark from its start
    for its duration, half-open like every episode: on those turns it makes no reading and
    sends nothing, and after it the device carries on at its usual interval and phase with no
    backlog (a dead device measured nothing). `seq` counts readings made, so it resumes at the
    number after the last reading before the outage, without a gap; `offline_skipped` counts
    the readings the outage cost. The behaviour model is still asked for its fields on the
    dark turns, and the answer is thrown away: the room, the cow and the household go on
    while the device is dark, so after the outage its readings are exactly those of the same
    run without the outage, but for `seq`. What the device held from before (a part-filled
    batch, readings a fault held back) is sent on its first turn back, or at the end of the
    run, like everything a device holds. Fault draws are made per reading sent, so with
    faults on, which faults come after an outage differs from a run without it.
    """

    tenant: str
    device_type: str
    device_id: str
    topic: str
    behaviour: Behaviour
    interval_s: float
    phase_s: float
    seq: int = 0  # readings made so far, and the `seq` of the next one
    buffered: list[bytes] = field(default_factory=list)
    faults: FaultInjector | None = None
    offline: list[tuple[float, float]] = field(default_factory=list)  # [begin, end) outages
    offline_skipped: int = 0  # readings not made because the device was offline
    downlink: DeviceDownlink | None = None  # its commands and desired state, if it obeys
    dark: bool = False  # offline at its last turn
    # Held while the behaviour makes a reading or obeys: those happen on different threads.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_episode(self, kind: str, start: float, duration_s: float) -> None:
        """Scripts an episode of `kind` from `start` for `duration_s`: `offline`, or one of the
        behaviour's own kinds."""
        kinds = episode_kinds(self.device_type)
        if kind not in kinds:
            raise FleetError(
                f"{self.device_type} has no event {kind!r}; it has: {', '.join(kinds)}"
            )
        if kind == OFFLINE:
            self.offline.append((start, start + duration_s))
        else:
            self.behaviour.episodes.add(kind, start, duration_s)

    def offline_at(self, t: float) -> bool:
        return any(begin <= t < end for begin, end in self.offline)

    def reading(self, t: float) -> bytes | None:
        """The JSON of this device's reading at `t`, or None if it does not report now (its
        behaviour has nothing to report, or the device is offline)."""
        fields = self.behaviour.fields(t)
        if fields is None:
            return None
        if self.offline and self.offline_at(t):
            self.offline_skipped += 1
            return None
        payload = orjson.dumps({"ts": round(t, 3), "seq": self.seq, **fields})
        self.seq += 1
        return payload


class Fleet:
    def __init__(
        self,
        specs: list[FleetSpec],
        *,
        prefix: str,
        seed: int,
        start: float,
        faults: FaultRates | None = None,
        obey: bool = False,
        command_faults: CommandFaults | None = None,
    ) -> None:
        self.start = start
        self.faults = faults if faults is not None and faults.any() else None
        self.fault_counts: Counter[str] = Counter()
        self.obey = obey
        self.command_faults = command_faults
        self.command_counts: Counter[str] = Counter()  # what the downlinks did, by outcome
        # Told (device, online, t) when a device scripted offline goes dark or comes back.
        self.presence: Callable[[SimulatedDevice, bool, float], None] | None = None
        self.devices: list[SimulatedDevice] = []
        self._by_id: dict[tuple[str, str], SimulatedDevice] = {}
        for spec in specs:
            self._add(spec, prefix, seed)
        if not self.devices:
            raise FleetError("the fleet is empty: give at least one device")

    def _add(self, spec: FleetSpec, prefix: str, seed: int) -> None:
        check_identifier("tenant", spec.tenant)
        if spec.device_type not in DEVICE_TYPES or spec.device_type not in BEHAVIOURS:
            known = ", ".join(sorted(BEHAVIOURS))
            raise FleetError(f"{spec.device_type!r} is not a simulated device type; known: {known}")
        factory = BEHAVIOURS[spec.device_type]
        interval = spec.interval_s or factory.default_interval_s
        if interval <= 0:
            raise FleetError("the interval must be positive")
        pattern = spec.id_pattern or f"{factory.id_prefix}-{{n:04d}}"
        for n in range(1, spec.count + 1):
            try:
                device_id = check_identifier("device id", pattern.format(n=n))
            except (KeyError, IndexError, ValueError) as exc:
                raise FleetError(
                    f"id pattern {pattern!r}: {exc}; write e.g. 'cow-{{n:04d}}'"
                ) from None
            if (spec.tenant, device_id) in self._by_id:
                raise FleetError(f"device {spec.tenant}/{device_id} appears twice")
            # Seeded by the device's identity (unique per tenant), so no two devices share a
            # random stream, whichever fleet they are in.
            rng = random.Random(f"{seed}:{spec.tenant}:{device_id}")
            behaviour = factory(rng, self.start, incident_every_s=spec.incident_every_s)
            if spec.interval_s is not None and isinstance(behaviour, Scheduled):
                behaviour.report_every_turn()  # the interval asked for applies to every type
            device = SimulatedDevice(
                spec.tenant,
                spec.device_type,
                device_id,
                telemetry_topic(prefix, spec.tenant, spec.device_type, device_id),
                behaviour,
                interval_s=interval,
                phase_s=rng.uniform(0, interval),
            )
            if self.obey and isinstance(behaviour, Obeys) and _has_downlink(spec.device_type):
                device.downlink = DeviceDownlink(
                    prefix,
                    spec.tenant,
                    spec.device_type,
                    device_id,
                    behaviour,
                    lock=device.lock,
                    faults=self.command_faults,
                    rng=random.Random(f"{seed}:commands:{spec.tenant}:{device_id}"),
                    counts=self.command_counts,
                )
            if self.faults is not None:
                device.faults = FaultInjector(
                    self.faults,
                    random.Random(f"{seed}:faults:{spec.tenant}:{device_id}"),
                    self.fault_counts,
                )
            self.devices.append(device)
            self._by_id[(spec.tenant, device_id)] = device

    def device(self, tenant: str, device_id: str) -> SimulatedDevice:
        try:
            return self._by_id[(tenant, device_id)]
        except KeyError:
            raise FleetError(f"no device {tenant}/{device_id} in the fleet") from None

    def _leftovers(self) -> Iterator[tuple[SimulatedDevice, bytes, int]]:
        for device in self.devices:
            yield from _leftovers_of(device)

    @staticmethod
    def rounds_for(duration_s: float | None, interval_s: float) -> int | None:
        """How many turns a device gets in `duration_s` (None: without end)."""
        if duration_s is None:
            return None
        return max(1, math.floor(duration_s / interval_s + 1e-9))

    def messages(
        self,
        clock: Clock,
        stop: threading.Event,
        *,
        duration_s: float | None,
        readings_per_message: int = 1,
    ) -> Iterator[tuple[SimulatedDevice, bytes, int]]:
        """(device, payload, readings in it) in time order, waiting on `clock` for each.

        Each device gets `duration_s / its interval` turns (at least one); a turn on which the
        device does not report (a blood-pressure meter between measurements, a device that is
        offline) sends nothing.
        """
        turns = {id(d): self.rounds_for(duration_s, d.interval_s) for d in self.devices}
        due = [(self.start + d.phase_s, i) for i, d in enumerate(self.devices)]
        heapq.heapify(due)
        while due:
            t, i = heapq.heappop(due)
            device = self.devices[i]
            if not clock.wait_until(t, stop):
                # Stopped early: what devices still hold (a part-filled batch, readings a
                # fault held back) goes out now, so every reading made is sent.
                yield from self._leftovers()
                return
            left = turns[id(device)]
            last_turn = left == 1
            if left is not None:
                turns[id(device)] = left - 1
            if not last_turn:
                heapq.heappush(due, (t + device.interval_s, i))
            if device.offline and device.offline_at(t) != device.dark:
                device.dark = not device.dark
                if self.presence is not None:
                    self.presence(device, not device.dark, t)
            with device.lock:
                payload = device.reading(t)
            if device.faults is not None:
                # A misbehaving device: its messages go out as the fault injector shapes them.
                sent = device.faults.apply(payload) if payload is not None else []
                if last_turn:
                    sent += device.faults.flush()
                for message in sent:
                    yield device, message, _readings_in(message)
                continue
            if payload is not None:
                device.buffered.append(payload)
            if device.buffered and (len(device.buffered) >= readings_per_message or last_turn):
                yield device, _join(device.buffered), len(device.buffered)
                device.buffered.clear()


def _has_downlink(device_type: str) -> bool:
    kind = DEVICE_TYPES[device_type]
    return bool(kind.commands) or kind.desired is not None


def _leftovers_of(device: SimulatedDevice) -> Iterator[tuple[SimulatedDevice, bytes, int]]:
    if device.buffered:
        yield device, _join(device.buffered), len(device.buffered)
        device.buffered.clear()
    if device.faults is not None:
        for message in device.faults.flush():
            yield device, message, _readings_in(message)


def _readings_in(message: bytes) -> int:
    if message.startswith(b"["):
        try:
            return len(orjson.loads(message))
        except orjson.JSONDecodeError:
            return 1
    return 1


def _join(payloads: list[bytes]) -> bytes:
    if len(payloads) == 1:
        return payloads[0]
    return b"[" + b",".join(payloads) + b"]"
