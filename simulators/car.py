"""A commuter's connected (electric) car: parked and locked at home, drives to work in the
morning, parks, drives home in the evening and charges overnight.

Episode: `battery_drain` (the car is left unlocked and unplugged, the battery runs low).

Commands (devices/car.py): `lock` and `unlock` hold until the driver next changes it (the car
unlocks to drive off and locks when parked, as before); `flash_lights` just succeeds. The
desired `locked` does the same.
"""

from __future__ import annotations

import math
import random
from typing import Any

from simulators.behaviour import SUCCEEDED, Episodes, Outcome, clamp, hour_of_day, rejected

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
        self._routine_locked: bool | None = None  # what the commute says, at the last reading
        self._locked_by_command: bool | None = None  # held until the routine changes it

    def command(self, name: str, args: dict[str, Any], t: float) -> Outcome:
        if name in ("lock", "unlock"):
            self._locked_by_command = name == "lock"
            return SUCCEEDED
        if name == "flash_lights":
            return SUCCEEDED
        return rejected(f"the car has no command {name!r}")

    def apply_desired(self, state: dict[str, Any], t: float) -> dict[str, Any]:
        if state.get("locked") is not None:
            self._locked_by_command = bool(state["locked"])
        return {"locked": self._locked(t)}

    def _locked(self, t: float) -> bool:
        if self._locked_by_command is not None:
            return self._locked_by_command
        return self._routine_locked if self._routine_locked is not None else True

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
        routine = not (moving or self.episodes.progress("battery_drain", t) is not None)
        if self._routine_locked is not None and routine != self._routine_locked:
            self._locked_by_command = None  # the driver drove off, or parked and locked
        self._routine_locked = routine
        return {
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "speed_kmh": round(clamp(speed + (rng.gauss(0, 4) if moving else 0), 0, 300), 1),
            "locked": self._locked(t),
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
