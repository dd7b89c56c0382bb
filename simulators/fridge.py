"""A fridge: the compressor keeps it between 3 and 5 °C, the door opens a few times a day.

Episode: `door_left_open`: the door stays open and the fridge warms toward the kitchen's
temperature (above 8 °C within about half an hour).

Command `set_temperature` (devices/fridge.py) and the desired `setpoint_c` move the band the
compressor keeps (setpoint ± 1 °C; 4 °C by default), and the fridge cools towards it.
"""

from __future__ import annotations

import math
import random
from typing import Any

from simulators.behaviour import (
    SUCCEEDED,
    Episodes,
    Outcome,
    clamp,
    hour_of_day,
    rejected,
    substeps,
)

KITCHEN_C = 20.0
SETPOINT_C = 4.0
BAND_C = 1.0  # the compressor starts above setpoint + band, stops below setpoint - band
# Longer gaps between readings are integrated in steps: the compressor switches within them.
MAX_STEP_S = 60.0


class FridgeBehaviour:
    id_prefix = "fridge"
    default_interval_s = 60.0
    episode_kinds = ("door_left_open",)

    def __init__(
        self, rng: random.Random, start: float, *, incident_every_s: float | None = None
    ) -> None:
        self._rng = rng
        self._temp = rng.uniform(3, 5)
        self._cooling = False
        self._last_t = start
        self._setpoint = SETPOINT_C
        self.episodes = Episodes(rng, start, incident_every_s, {"door_left_open": 1.0})

    def command(self, name: str, args: dict[str, Any], t: float) -> Outcome:
        if name != "set_temperature":
            return rejected(f"the fridge has no command {name!r}")
        self._setpoint = float(args["setpoint_c"])
        return SUCCEEDED

    def apply_desired(self, state: dict[str, Any], t: float) -> dict[str, Any]:
        if state.get("setpoint_c") is not None:
            self._setpoint = float(state["setpoint_c"])
        return {"setpoint_c": self._setpoint}

    def fields(self, t: float) -> dict[str, Any]:
        rng = self._rng
        *earlier, (_, seconds) = substeps(self._last_t, t, MAX_STEP_S)
        self._last_t = t
        for at, step_s in earlier:  # a long gap: the compressor switches within it
            left_open = self.episodes.progress("door_left_open", at) is not None
            self._advance(step_s / 60, door_open=left_open, left_open=left_open)
        hour = hour_of_day(t)
        left_open = self.episodes.progress("door_left_open", t) is not None
        # Meals: the door opens briefly now and then around breakfast and dinner.
        mealtime = 7 <= hour < 8 or 17.5 <= hour < 19.5
        door_open = left_open or (mealtime and rng.random() < 0.05)
        self._advance(seconds / 60, door_open=door_open, left_open=left_open)
        return {
            "temp_c": round(clamp(self._temp + rng.gauss(0, 0.05), -30, 40), 2),
            "door_open": door_open,
        }

    def _advance(self, minutes: float, *, door_open: bool, left_open: bool) -> None:
        warming = 0.03 if door_open else 0.005  # fraction of the gap to the kitchen per minute
        self._temp += (KITCHEN_C - self._temp) * (1 - math.exp(-warming * minutes))
        if self._temp > self._setpoint + BAND_C:
            self._cooling = True
        elif self._temp < self._setpoint - BAND_C:
            self._cooling = False
        if self._cooling and not left_open:
            self._temp -= 0.25 * minutes
