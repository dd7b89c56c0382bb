"""A fleet of simulated devices on one thread: thousands of devices, no thread per device.

Every device reports once per interval at its own phase within the interval, so the load is
spread evenly. Each device has its own random generator seeded from (seed, type, index): the
same seed gives the same readings, and adding thermostats does not change the cows.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson

from devices.catalogue import DEVICE_TYPES
from devices.topics import check_identifier, telemetry_topic
from simulators.behaviour import Behaviour
from simulators.catalogue import BEHAVIOURS
from simulators.clock import Clock


class FleetError(ValueError):
    """A fleet description that cannot be simulated; the message says what is allowed."""


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


@dataclass(slots=True)
class SimulatedDevice:
    device_type: str
    device_id: str
    topic: str
    behaviour: Behaviour
    phase_s: float
    seq: int = 0
    buffered: list[bytes] = field(default_factory=list)

    def reading(self, t: float) -> bytes:
        fields = self.behaviour.fields(t)
        payload = orjson.dumps({"ts": round(t, 3), "seq": self.seq, **fields})
        self.seq += 1
        return payload


class Fleet:
    def __init__(
        self,
        counts: dict[str, int],
        *,
        tenant: str,
        prefix: str,
        seed: int,
        start: float,
        interval_s: float,
        incident_every_s: float | None = None,
    ) -> None:
        check_identifier("tenant", tenant)
        if interval_s <= 0:
            raise FleetError("the interval must be positive")
        self.interval_s = interval_s
        self.start = start
        self.devices: list[SimulatedDevice] = []
        for device_type, count in counts.items():
            if device_type not in DEVICE_TYPES:
                raise FleetError(f"{device_type!r} is not in the device catalogue")
            factory = BEHAVIOURS[device_type]
            for index in range(1, count + 1):
                rng = random.Random(f"{seed}:{device_type}:{index}")
                device_id = f"{factory.id_prefix}-{index:04d}"
                self.devices.append(
                    SimulatedDevice(
                        device_type,
                        device_id,
                        telemetry_topic(prefix, tenant, device_type, device_id),
                        factory(rng, start, incident_every_s=incident_every_s),
                        phase_s=rng.uniform(0, interval_s),
                    )
                )
        self.devices.sort(key=lambda d: d.phase_s)

    def rounds_for(self, duration_s: float | None) -> int | None:
        """How many readings each device sends in `duration_s` (None: without end)."""
        if duration_s is None:
            return None
        return max(1, math.floor(duration_s / self.interval_s + 1e-9))

    def messages(
        self,
        clock: Clock,
        stop: threading.Event,
        *,
        rounds: int | None,
        readings_per_message: int = 1,
    ) -> Iterator[tuple[str, bytes, int]]:
        """(topic, payload, readings in it) in time order, waiting on `clock` for each."""
        k = 0
        while rounds is None or k < rounds:
            last_round = rounds is not None and k == rounds - 1
            base = self.start + k * self.interval_s
            for device in self.devices:
                t = base + device.phase_s
                if not clock.wait_until(t, stop):
                    return
                device.buffered.append(device.reading(t))
                if len(device.buffered) >= readings_per_message or last_round:
                    yield device.topic, _join(device.buffered), len(device.buffered)
                    device.buffered.clear()
            k += 1


def _join(payloads: list[bytes]) -> bytes:
    if len(payloads) == 1:
        return payloads[0]
    return b"[" + b",".join(payloads) + b"]"


ProgressCallback = Callable[[int, int], None]
