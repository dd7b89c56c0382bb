"""A commuter's connected (electric) car: parked and locked at home, drives to work in the
morning, parks, drives home in the evening and charges overnight.

Episode: `battery_drain` (the car is left unlocked and unplugged, the battery runs low).
"""

from __future__ import annotations

import math
import random
from typing import Any

from simulators.behaviour import Episodes, clamp, hour_of_day

HOME = (52.0705, 4.3007)  # The Hague
KM_PER_DEGREE = 111.0


class CarBehaviour:
    id_prefix = "car"
    default_interval_s = 5.0
    episode_kinds = ("battery_drain",)

    def __init__(
        self, rng: random.Random, start: float, *, incident_every_s: float | None = None
    ) -> None:
        self._rng = rng
        self._home = (HOME[0] + rng.uniform(-0.03, 0.03), HOME[1] + rng.uniform(-0.05, 0.05))
        bearing = rng.uniform(0, 2 * math.pi)
        distance_km = rng.uniform(8, 40)
        self._work = (
            self._home[0] + distance_km / KM_PER_DEGREE * math.cos(bearing),
            self._home[1] + distance_km / (KM_PER_DEGREE * 0.62) * math.sin(bearing),
        )
        self._trip_h = distance_km / rng.uniform(45, 70)
        self._leave_h = rng.uniform(7.0, 8.5)
        self._return_h = rng.uniform(16.5, 18.5)
        self._energy = rng.uniform(50, 95)
        self._last_t = start
        self.episodes = Episodes(rng, start, incident_every_s, {"battery_drain": 1.0})

    def fields(self, t: float) -> dict[str, Any]:
        rng = self._rng
        dt_h = max(0.0, t - self._last_t) / 3600
        self._last_t = t
        hour = hour_of_day(t)
        (lat, lon), speed, moving = self._where(hour)
        if moving:
            self._energy -= dt_h * speed * 0.18 / 0.75  # ~18 kWh/100 km on a 75 kWh battery
        elif self._at_home(hour) and self.episodes.progress("battery_drain", t) is None:
            self._energy = min(100.0, self._energy + dt_h * 11 / 0.75)  # 11 kW charger
        if self.episodes.progress("battery_drain", t) is not None:
            self._energy -= dt_h * 4
        self._energy = clamp(self._energy, 0, 100)
        unlocked = moving or self.episodes.progress("battery_drain", t) is not None
        return {
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "speed_kmh": round(clamp(speed + (rng.gauss(0, 4) if moving else 0), 0, 300), 1),
            "locked": not unlocked,
            "energy_pct": round(self._energy, 1),
        }

    def _at_home(self, hour: float) -> bool:
        return hour < self._leave_h or hour >= self._return_h + self._trip_h

    def _where(self, hour: float) -> tuple[tuple[float, float], float, bool]:
        for begin, origin, target in (
            (self._leave_h, self._home, self._work),
            (self._return_h, self._work, self._home),
        ):
            if begin <= hour < begin + self._trip_h:
                share = (hour - begin) / self._trip_h
                position = (
                    origin[0] + (target[0] - origin[0]) * share,
                    origin[1] + (target[1] - origin[1]) * share,
                )
                # Slower at both ends of the trip (town), faster in the middle (motorway).
                speed = 30 + 90 * math.sin(math.pi * share)
                return position, speed, True
        return (self._home if self._at_home(hour) else self._work), 0.0, False
