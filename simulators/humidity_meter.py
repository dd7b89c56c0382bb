"""A bathroom's humidity: around 50 %, a shower in the morning (and some evenings) sends it to
85–95 %, and the extractor fan brings it back within half an hour.

Episode: `fan_failure`: the fan stops, so after a shower the room stays damp for hours.
"""

from __future__ import annotations

import math
import random
from typing import Any

from simulators.behaviour import Episodes, clamp, daily_wave, hour_of_day


class HumidityMeterBehaviour:
    id_prefix = "humidity"
    default_interval_s = 60.0
    episode_kinds = ("fan_failure",)

    def __init__(
        self, rng: random.Random, start: float, *, incident_every_s: float | None = None
    ) -> None:
        self._rng = rng
        self._base = rng.uniform(45, 58)
        self._humidity = self._base
        self._shower_h = rng.uniform(6.5, 8.0)
        self._evening_shower = rng.random() < 0.4
        self._last_t = start
        self.episodes = Episodes(rng, start, incident_every_s, {"fan_failure": 1.0})

    def fields(self, t: float) -> dict[str, Any]:
        rng = self._rng
        minutes = max(0.0, t - self._last_t) / 60
        self._last_t = t
        hour = hour_of_day(t)
        showering = self._shower_h <= hour < self._shower_h + 0.2 or (
            self._evening_shower and 21.0 <= hour < 21.2
        )
        if showering:
            self._humidity += (95 - self._humidity) * (1 - math.exp(-0.3 * minutes))
        else:
            fan = 0.002 if self.episodes.progress("fan_failure", t) is not None else 0.08
            self._humidity += (self._base - self._humidity) * (1 - math.exp(-fan * minutes))
        temp = 20.5 + 0.8 * daily_wave(t, peak_hour=16) + (1.5 if showering else 0.0)
        return {
            "humidity_pct": round(clamp(self._humidity + rng.gauss(0, 0.4), 0, 100), 1),
            "temp_c": round(clamp(temp + rng.gauss(0, 0.1), -40, 85), 2),
        }
