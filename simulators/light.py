"""A light (or a smart plug with a lamp): on in the evening, off at night, a few watts when on.

Episode: `overload`: something heavy is plugged in (a heater), drawing ~2.5 kW for a while.
"""

from __future__ import annotations

import random
from typing import Any

from simulators.behaviour import Episodes, hour_of_day

LAMP_W = 8.5  # an LED lamp
STANDBY_W = 0.3  # the plug's own draw when off
OVERLOAD_W = 2500.0


class LightBehaviour:
    id_prefix = "light"
    default_interval_s = 60.0
    episode_kinds = ("overload",)

    def __init__(
        self, rng: random.Random, start: float, *, incident_every_s: float | None = None
    ) -> None:
        self._rng = rng
        self.episodes = Episodes(rng, start, incident_every_s, {"overload": 1.0})

    def fields(self, t: float) -> dict[str, Any]:
        hour = hour_of_day(t)
        on = 18 <= hour < 23 or 6.5 <= hour < 7.5  # evenings and early mornings
        if self.episodes.progress("overload", t) is not None:
            return {"on": True, "power_w": round(OVERLOAD_W + self._rng.gauss(0, 20), 1)}
        power = LAMP_W + self._rng.gauss(0, 0.1) if on else STANDBY_W
        return {"on": on, "power_w": round(max(0.0, power), 2)}
