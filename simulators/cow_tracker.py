"""A dairy cow: body temperature around 38.6 °C, active by day, ruminating by night, grazing.

Episodes (random, or scripted by a scenario):
- `fever`: illness. Temperature rises to 39.8–40.6 °C; activity and rumination fall.
- `still`: lying still, activity near zero (the farmer's "not moving").
- `heat`: oestrus. Activity at 2–4x the cow's own baseline. Besides scripted ones, every cow
  comes into heat every 20–22 days for about 18 hours, at a phase of her own.
- `calving`: the day before calving. Body temperature drops by about 0.5 °C.

Default interval, 30 s: a reading is about 190 bytes on the wire (topic, JSON payload and MQTT
header), 1,051,200 readings a year, so about 200 MB a year per cow, as the MOCLO article says.
"""

from __future__ import annotations

import math
import random
from typing import Any

from simulators.behaviour import Episodes, clamp, daily_wave, ramp

# Pasture centre (a farm near Utrecht) and radius in degrees (~400 m).
FARM_LAT, FARM_LON, PASTURE_DEG = 52.0907, 5.1214, 0.0036
DAY = 86_400.0
HEAT_HOURS = 18.0


class CowBehaviour:
    id_prefix = "cow"
    default_interval_s = 30.0
    episode_kinds = ("fever", "still", "heat", "calving")

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
        self._fever_peak = rng.uniform(39.8, 40.6)
        self._heat_factor = rng.uniform(2.0, 4.0)
        self._heat_period = rng.uniform(20.0, 22.0) * DAY
        # Counted from the simulation's start, so a seed gives the same heats whatever the date.
        self._heat_phase = start + rng.uniform(0, self._heat_period)
        self.episodes = Episodes(rng, start, incident_every_s, {"fever": 0.7, "still": 0.3})

    def _in_heat(self, t: float) -> float:
        scripted = self.episodes.progress("heat", t)
        if scripted is not None:
            return ramp(scripted, 0.15)
        into_cycle = (t - self._heat_phase) % self._heat_period
        return ramp(into_cycle / (HEAT_HOURS * 3600)) if into_cycle < HEAT_HOURS * 3600 else 0.0

    def fields(self, t: float) -> dict[str, Any]:
        rng = self._rng
        dt = max(0.0, t - self._last_t)
        self._last_t = t
        episodes = self.episodes
        fever = ramp(episodes.progress("fever", t))
        still = episodes.progress("still", t) is not None
        calving = ramp(episodes.progress("calving", t), 0.3)
        heat = self._in_heat(t)

        temp = (
            self._temp_base
            + 0.15 * daily_wave(t, peak_hour=17)
            + fever * (self._fever_peak - self._temp_base)
            - 0.5 * calving
            + rng.gauss(0, 0.04)
        )
        day = daily_wave(t, peak_hour=13)
        vigour = 1.0 - 0.6 * fever
        activity = self._activity_base * (1 + 0.6 * day) * vigour * rng.uniform(0.85, 1.15)
        activity *= 1 + (self._heat_factor - 1) * heat
        if still:
            activity = rng.uniform(0, 8)
        rumination = (32 - 10 * day) * (1 - 0.5 * fever) * (1 - 0.4 * heat) + rng.gauss(0, 3)
        # Grazing: a small random walk that stays in the pasture.
        step = 0.00002 * math.sqrt(dt / 60.0 + 1e-9) * (activity / 400)
        self._lat = clamp(
            self._lat + rng.gauss(0, step), FARM_LAT - PASTURE_DEG, FARM_LAT + PASTURE_DEG
        )
        self._lon = clamp(
            self._lon + rng.gauss(0, step), FARM_LON - PASTURE_DEG, FARM_LON + PASTURE_DEG
        )
        self._battery = max(0.0, self._battery - dt / (180 * DAY) * 100)  # ~6 months a charge
        return {
            "body_temp_c": round(clamp(temp, 30, 45), 2),
            "activity": int(clamp(activity, 0, 10_000)),
            "rumination_min": int(clamp(rumination, 0, 60)),
            "lat": round(self._lat, 6),
            "lon": round(self._lon, 6),
            "battery_pct": round(self._battery, 1),
        }
