"""A room thermostat: the room heats toward the setpoint and cools toward the outside.

Episodes: `heater_failure`: the thermostat still asks for heat but none comes, so the room
drifts toward the outside temperature; on a cold day it falls below 5 °C (frost risk). The
setpoint follows a schedule: 2 °C lower at night (23:00–06:00).

Command `set_setpoint` (devices/thermostat.py) and the desired `setpoint_c` hold a new setpoint
(night setback and all: a person's setting wins over the schedule, as "hold" on a real
thermostat), reported in `setpoint_c`; the room heats towards it.
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
    daily_wave,
    hour_of_day,
    rejected,
    substeps,
)

HEAT_RATE_C_PER_H = 4.0  # a working heater beats the loss even at -12 °C outside
LOSS_PER_H = 0.08  # fraction of the inside-outside gap lost per hour (~12 h time constant)
# Longer gaps between readings are integrated in steps: the heater switches within them.
MAX_STEP_S = 300.0


class ThermostatBehaviour:
    id_prefix = "thermostat"
    default_interval_s = 60.0
    episode_kinds = ("heater_failure",)

    def __init__(
        self, rng: random.Random, start: float, *, incident_every_s: float | None = None
    ) -> None:
        self._rng = rng
        self._setpoint = rng.choice([19.0, 19.5, 20.0, 20.5, 21.0, 21.5])
        self._outside_mean = rng.uniform(-8, 8)
        self._temp = self._setpoint + rng.uniform(-1.5, 0.5)
        self._humidity = rng.uniform(38, 55)
        self._heating = False
        self._last_t = start
        self._held: float | None = None  # a setpoint a person set: no schedule
        self.episodes = Episodes(rng, start, incident_every_s, {"heater_failure": 1.0})

    def command(self, name: str, args: dict[str, Any], t: float) -> Outcome:
        if name != "set_setpoint":
            return rejected(f"the thermostat has no command {name!r}")
        self._held = float(args["setpoint_c"])
        return SUCCEEDED

    def apply_desired(self, state: dict[str, Any], t: float) -> dict[str, Any]:
        if state.get("setpoint_c") is not None:
            self._held = float(state["setpoint_c"])
        return {"setpoint_c": self._scheduled(t)}

    def _scheduled(self, t: float) -> float:
        if self._held is not None:
            return self._held
        hour = hour_of_day(t)
        return self._setpoint - (2.0 if hour >= 23 or hour < 6 else 0.0)

    def fields(self, t: float) -> dict[str, Any]:
        rng = self._rng
        setpoint = self._setpoint
        for at, seconds in substeps(self._last_t, t, MAX_STEP_S):
            setpoint = self._advance(at, seconds / 3600.0)
        self._last_t = t
        self._humidity = clamp(self._humidity + rng.gauss(0, 0.3), 25, 70)
        return {
            "temp_c": round(clamp(self._temp + rng.gauss(0, 0.05), -40, 85), 2),
            "setpoint_c": setpoint,
            "humidity_pct": round(self._humidity, 1),
            "heating": self._heating,
        }

    def _advance(self, t: float, hours: float) -> float:
        """The room's temperature over the `hours` up to `t`; returns the setpoint at `t`."""
        outside = self._outside_mean + 4 * daily_wave(t, peak_hour=15)
        setpoint = self._scheduled(t)
        # A thermostat's own hysteresis: on below setpoint - 0.3, off above setpoint + 0.3.
        if self._temp < setpoint - 0.3:
            self._heating = True
        elif self._temp > setpoint + 0.3:
            self._heating = False
        heater_works = self.episodes.progress("heater_failure", t) is None
        gain = HEAT_RATE_C_PER_H * hours if (self._heating and heater_works) else 0.0
        self._temp += gain - (self._temp - outside) * (1 - math.exp(-LOSS_PER_H * hours))
        return setpoint
