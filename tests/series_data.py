"""Known readings for the read side's tests, stored as ingest stores them, and the aggregates
those readings should give, computed here in plain Python (not by InfluxDB) to compare with."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from devices.catalogue import DEVICE_TYPES
from devices.topics import DeviceAddress
from ingest.decode import ValidReading
from storage.lineprotocol import reading_line
from tests.helpers import Influx

NS = 1_000_000_000
# On the hour, three hours ago: `--since` windows from the wall clock reach every reading.
T0 = (time.time_ns() // NS // 3600 - 3) * 3600
MINUTES = 120
SILENT = range(40, 50)  # cow-a sends nothing in these minutes: two empty 5-minute buckets


@dataclass(frozen=True, slots=True)
class Stored:
    tenant: str
    device_type: str
    device_id: str
    ts_ns: int
    values: dict[str, Any]


# (tenant, type, id, seconds into each minute): distinct, so `last` over a fleet is unique.
DEVICES = (
    ("farm", "cow_tracker", "cow-a", 0),
    ("farm", "cow_tracker", "cow-b", 13),
    ("zoo", "cow_tracker", "cow-z", 29),
    ("home", "thermostat", "th-1", 41),
)


def readings(seed: int = 7) -> list[Stored]:
    """Two hours of one reading a minute from each device in DEVICES, oldest first."""
    rnd = random.Random(seed)
    out = []
    for tenant, device_type, device_id, second in DEVICES:
        for minute in range(MINUTES):
            if device_id == "cow-a" and minute in SILENT:
                continue
            values: dict[str, Any]
            if device_type == "cow_tracker":
                values = {
                    "body_temp_c": round(37.5 + rnd.random() * 3, 2),
                    "activity": rnd.randint(0, 2000),
                    "rumination_min": rnd.randint(0, 60),
                    "lat": round(52 + rnd.random(), 5),
                    "lon": round(5 + rnd.random(), 5),
                    "battery_pct": round(100 - minute / 4, 2),
                }
            else:
                values = {
                    "temp_c": round(18 + rnd.random() * 4, 2),
                    "setpoint_c": 20.0,
                    "humidity_pct": round(40 + rnd.random() * 20, 1),
                    "heating": rnd.random() < 0.4,
                }
            ts_ns = (T0 + minute * 60 + second) * NS
            out.append(Stored(tenant, device_type, device_id, ts_ns, {**values, "seq": minute}))
    return out


def store(influx: Influx, stored: Iterable[Stored]) -> None:
    """Writes the readings with ingest's own line format."""
    lines = []
    for r in stored:
        reading = DEVICE_TYPES[r.device_type].reading.model_validate(
            {**r.values, "ts": f"{_rfc3339(r.ts_ns)}"}
        )
        lines.append(
            reading_line(ValidReading(DeviceAddress(r.tenant, r.device_type, r.device_id), reading))
        )
    influx.write(lines)


def _rfc3339(ts_ns: int) -> str:
    seconds, fraction = divmod(ts_ns, NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def expected_buckets(
    stored: Iterable[Stored],
    *,
    field: str,
    agg: str,
    every_s: int,
    start_ns: int,
    end_ns: int,
    key: Any = None,
) -> dict[Any, dict[int, Any]]:
    """`agg` of `field` per bucket start (ns), per `key(reading)` (None: one group of all)."""
    groups: dict[Any, dict[int, list[tuple[int, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in stored:
        if start_ns <= r.ts_ns < end_ns:
            bucket = r.ts_ns // (every_s * NS) * every_s * NS
            groups[key(r) if key else None][bucket].append((r.ts_ns, r.values[field]))
    return {
        group: {bucket: _aggregate(agg, points) for bucket, points in buckets.items()}
        for group, buckets in groups.items()
    }


def _aggregate(agg: str, points: list[tuple[int, Any]]) -> Any:
    values = [v for _, v in points]
    if agg == "mean":
        return sum(values) / len(values)
    if agg == "min":
        return min(values)
    if agg == "max":
        return max(values)
    if agg == "sum":
        return sum(values)
    if agg == "count":
        return len(values)
    if agg == "last":
        return max(points, key=lambda p: p[0])[1]
    raise AssertionError(agg)
