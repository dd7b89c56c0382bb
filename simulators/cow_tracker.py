"""A dairy cow: body temperature around 38.6 °C, active by day, ruminating by night, grazing.

An incident is an illness: a fever that rises over the first tenth of the episode to
39.8–40.6 °C and falls at its end, with less activity and less rumination while it lasts.
"""

from __future__ import annotations

import math
import random
from typing import Any

from simulators.behaviour import Incidents, clamp, daily_wave

# Pasture centre (a farm near Utrecht) and radius in degrees (~400 m).
FARM_LAT, FARM_LON, PASTURE_DEG = 52.0907, 5.1214, 0.0036


class CowBehaviour:
    id_prefix = "cow"

    def __init__(
        self, rng: random.Random, start: float, *, incident_every_s: float | None = None
    ) -> None:
        self._rng = rng
        self._temp_base = rng.gauss(38.6, 0.12)
        self._activity_base = rng.uniform(250, 450)
        self._lat = FARM_LAT + rng.uniform(-PASTURE_DEG, PASTURE_DEG) / 2
        self._lon = FARM_LON + rng.uniform(-PASTURE_DEG, PASTURE_DEG) / 2
        self._battery = rng.uniform(70, 100)
        self._last_t = start
        self._incidents = Incidents(rng, start, incident_every_s)
        self._fever_peak = rng.uniform(39.8, 40.6)

    def fields(self, t: float) -> dict[str, Any]:
        rng = self._rng
        dt = max(0.0, t - self._last_t)
        self._last_t = t
        sick = self._incidents.progress(t)
        fever = 0.0
        if sick is not None:
            # Rises over the first 10 % of the illness, plateaus, falls over the last 10 %.
            fever = (self._fever_peak - self._temp_base) * min(1.0, sick / 0.1, (1 - sick) / 0.1)
        temp = self._temp_base + 0.15 * daily_wave(t, peak_hour=17) + fever + rng.gauss(0, 0.04)
        day = daily_wave(t, peak_hour=13)
        vigour = 0.4 if sick is not None else 1.0
        activity = self._activity_base * (1 + 0.6 * day) * vigour * rng.uniform(0.8, 1.2)
        rumination = (32 - 10 * day) * (0.5 if sick is not None else 1.0) + rng.gauss(0, 3)
        # Grazing: a small random walk that stays in the pasture.
        step = 0.00002 * math.sqrt(dt / 60.0 + 1e-9) * (activity / 400)
        self._lat = clamp(
            self._lat + rng.gauss(0, step), FARM_LAT - PASTURE_DEG, FARM_LAT + PASTURE_DEG
        )
        self._lon = clamp(
            self._lon + rng.gauss(0, step), FARM_LON - PASTURE_DEG, FARM_LON + PASTURE_DEG
        )
        self._battery = max(0.0, self._battery - dt / (180 * 86_400) * 100)  # ~6 months a charge
        return {
            "body_temp_c": round(clamp(temp, 30, 45), 2),
            "activity": int(clamp(activity, 0, 10_000)),
            "rumination_min": int(clamp(rumination, 0, 60)),
            "lat": round(self._lat, 6),
            "lon": round(self._lon, 6),
            "battery_pct": round(self._battery, 1),
        }
