"""A light (or a smart plug with a lamp): on in the evening, off at night, a few watts when on.

Episode: `overload`: something heavy is plugged in (a heater), drawing ~2.5 kW for a while.

Command `switch` (devices/light.py) and the desired `on` switch it on or off until its own
timer next switches (evening on, night off), as a smart plug with a schedule does.
"""

from __future__ import annotations

import random
from typing import Any

from simulators.behaviour import SUCCEEDED, Episodes, Outcome, hour_of_day, rejected

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
        self._switched: bool | None = None  # a person's switch, held until the timer's next
        self._timer_on: bool | None = None

    def command(self, name: str, args: dict[str, Any], t: float) -> Outcome:
        if name != "switch":
            return rejected(f"the light has no command {name!r}")
        self._switched = args["state"] == "on"
        return SUCCEEDED

    def apply_desired(self, state: dict[str, Any], t: float) -> dict[str, Any]:
        if state.get("on") is not None:
            self._switched = bool(state["on"])
        return {"on": self._on(t)}

    def _on(self, t: float) -> bool:
        hour = hour_of_day(t)
        timer = 18 <= hour < 23 or 6.5 <= hour < 7.5  # evenings and early mornings
        if self._timer_on is not None and timer != self._timer_on:
            self._switched = None  # the timer switched: it wins until a person switches again
        self._timer_on = timer
        return timer if self._switched is None else self._switched

    def fields(self, t: float) -> dict[str, Any]:
        on = self._on(t)
        if self.episodes.progress("overload", t) is not None:
            return {"on": True, "power_w": round(OVERLOAD_W + self._rng.gauss(0, 20), 1)}
        power = LAMP_W + self._rng.gauss(0, 0.1) if on else STANDBY_W
        return {"on": on, "power_w": round(max(0.0, power), 2)}
