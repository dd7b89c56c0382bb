"""The read-side benchmark's stored history: thermostats reporting once a minute, as line
protocol in exactly the form ingest writes (`storage.lineprotocol.reading_line`).

Every value is a pure function of (device number, absolute minute), so a test can compute what
any query over the history must answer, and the generator can be a tight loop over lookup
tables (plain string formatting; no numpy, which is not a dependency):

- setpoint_c: one of six comfort settings per device, 2 °C lower from 23:00 to 06:00 UTC;
- temp_c: the setpoint, a daily wave (±0.6 °C, warmest at 15:00), a per-device offset
  (±0.2 °C) and noise (±0.15 °C) from a fixed table, in hundredths of a degree;
- humidity_pct: a per-device level (38–55 %) and a daily wave (±3 %), in tenths;
- heating: on when the room is more than 0.1 °C below its setpoint;
- seq: minutes since the device's history began (an integer field, `i` in line protocol).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

DEVICE_TYPE = "thermostat"
FIELDS = ("temp_c", "setpoint_c", "humidity_pct", "heating", "seq")
MINUTE_NS = 60_000_000_000
DAY_MINUTES = 1_440

_SETPOINTS_H = (1900, 1950, 2000, 2050, 2100, 2150)  # hundredths of a degree
_NOISE = tuple(random.Random(7).randint(-15, 15) for _ in range(1021))
# Daily waves, by minute of the day (UTC).
_TEMP_WAVE = tuple(
    round(60 * math.cos(2 * math.pi * (m - 15 * 60) / DAY_MINUTES)) for m in range(DAY_MINUTES)
)
_HUMIDITY_WAVE = tuple(
    round(30 * math.sin(2 * math.pi * m / DAY_MINUTES)) for m in range(DAY_MINUTES)
)
_NIGHT = tuple(m >= 23 * 60 or m < 6 * 60 for m in range(DAY_MINUTES))
# Formatted values: float fields as `format_field` writes them (repr of the float).
_HUNDREDTHS = tuple(repr(h / 100) for h in range(4_001))
_TENTHS = tuple(repr(t / 10) for t in range(1_001))


@dataclass(frozen=True, slots=True)
class Fleet:
    """`devices` thermostats over `tenants` tenants, one reading a minute for `days` days
    ending (exclusive) at the absolute minute `end_minute` (Unix time // 60)."""

    devices: int
    days: int
    end_minute: int
    tenants: int = 10

    @property
    def start_minute(self) -> int:
        return self.end_minute - self.days * DAY_MINUTES

    @property
    def points(self) -> int:
        return self.devices * self.days * DAY_MINUTES

    def device_id(self, d: int) -> str:
        return f"th-{d:05d}"

    def tenant(self, d: int) -> str:
        return f"homes-{d % self.tenants:02d}"

    def values(self, d: int, minute: int) -> dict[str, Any]:
        """Device d's reading at an absolute minute, as the fields ingest would store."""
        setpoint, temp, humidity, heating = _hundredths(d, minute)
        return {
            "temp_c": temp / 100,
            "setpoint_c": setpoint / 100,
            "humidity_pct": humidity / 10,
            "heating": heating,
            "seq": minute - self.start_minute,
        }

    def lines(self, first_minute: int, last_minute: int) -> list[str]:
        """Every device's line for each minute in [first, last), time-major (as ingest writes
        a fleet: a minute of all devices, then the next)."""
        heads = [
            (
                f"{DEVICE_TYPE},device_id={self.device_id(d)},tenant={self.tenant(d)} ",
                _SETPOINTS_H[d % 6],
                d % 41 - 20,
                380 + (d * 37) % 170,
                d * 13,
            )
            for d in range(self.devices)
        ]
        out: list[str] = []
        append = out.append
        noise, hundredths, tenths = _NOISE, _HUNDREDTHS, _TENTHS
        for minute in range(first_minute, last_minute):
            of_day = minute % DAY_MINUTES
            night = -200 if _NIGHT[of_day] else 0
            wave = _TEMP_WAVE[of_day]
            humidity_wave = _HUMIDITY_WAVE[of_day]
            tail = f",seq={minute - self.start_minute}i {minute * MINUTE_NS}"
            m7 = minute * 7
            for head, comfort, offset, humidity, d13 in heads:
                setpoint = comfort + night
                temp = setpoint + wave + offset + noise[(m7 + d13) % 1021]
                heating = "true" if temp < setpoint - 10 else "false"
                append(
                    f"{head}temp_c={hundredths[temp]},setpoint_c={hundredths[setpoint]},"
                    f"humidity_pct={tenths[humidity + humidity_wave]},heating={heating}{tail}"
                )
        return out

    def batches(self, minutes_per_batch: int) -> Iterator[tuple[int, bytes]]:
        """(points, body) for the whole history, oldest first."""
        for first in range(self.start_minute, self.end_minute, minutes_per_batch):
            last = min(first + minutes_per_batch, self.end_minute)
            yield (last - first) * self.devices, "\n".join(self.lines(first, last)).encode()

    def expected_buckets(
        self, d: int, first_minute: int, last_minute: int, every_minutes: int
    ) -> list[tuple[int, dict[str, float]]]:
        """(bucket start in ns, mean of every number field and of `seq`) for device d's
        readings in [first, last), buckets aligned to the epoch as InfluxDB aligns them."""
        first_minute = max(first_minute, self.start_minute)
        last_minute = min(last_minute, self.end_minute)
        sums: dict[int, list[float]] = {}
        for minute in range(first_minute, last_minute):
            bucket = minute - minute % every_minutes
            v = self.values(d, minute)
            acc = sums.setdefault(bucket, [0.0, 0.0, 0.0, 0.0, 0.0])
            acc[0] += v["temp_c"]
            acc[1] += v["setpoint_c"]
            acc[2] += v["humidity_pct"]
            acc[3] += v["seq"]
            acc[4] += 1
        return [
            (
                bucket * MINUTE_NS,
                {
                    "temp_c": acc[0] / acc[4],
                    "setpoint_c": acc[1] / acc[4],
                    "humidity_pct": acc[2] / acc[4],
                    "seq": acc[3] / acc[4],
                },
            )
            for bucket, acc in sorted(sums.items())
        ]


def _hundredths(d: int, minute: int) -> tuple[int, int, int, bool]:
    """(setpoint in hundredths, temperature in hundredths, humidity in tenths, heating): the
    same arithmetic as `Fleet.lines`, one reading at a time."""
    of_day = minute % DAY_MINUTES
    setpoint = _SETPOINTS_H[d % 6] + (-200 if _NIGHT[of_day] else 0)
    temp = setpoint + _TEMP_WAVE[of_day] + d % 41 - 20 + _NOISE[(minute * 7 + d * 13) % 1021]
    humidity = 380 + (d * 37) % 170 + _HUMIDITY_WAVE[of_day]
    return setpoint, temp, humidity, temp < setpoint - 10
