"""A household's electricity: a base load, appliances switching on, off and to standby over the
day, and a counter that integrates power (it never goes backwards).

Episodes: `voltage_sag` (the grid sags to 195–205 V) and `overload` (everything at once).

Command `switch` (devices/smart_meter.py) and the desired `appliances` set an appliance on, off
or to standby, and it stays so (the household's own switching leaves it alone) until switched
again: on draws its full power, standby its standby power, off nothing.
"""

from __future__ import annotations

import random
from typing import Any

from simulators.behaviour import SUCCEEDED, Episodes, Outcome, clamp, hour_of_day, rejected

# (name, watts when on, standby watts, hours of the day it may run, chance per reading)
APPLIANCES = (
    ("kettle", 2000.0, 0.0, (6.5, 8.5), 0.15),
    ("oven", 2400.0, 2.0, (17.5, 19.5), 0.5),
    ("washing-machine", 1800.0, 1.5, (9.0, 21.0), 0.05),
    ("television", 120.0, 8.0, (19.0, 23.5), 0.8),
    ("heat-pump", 1500.0, 10.0, (0.0, 24.0), 0.3),
)
APPLIANCE_NAMES = tuple(name for name, *_ in APPLIANCES)


class SmartMeterBehaviour:
    id_prefix = "meter"
    default_interval_s = 10.0
    episode_kinds = ("voltage_sag", "overload")

    def __init__(
        self, rng: random.Random, start: float, *, incident_every_s: float | None = None
    ) -> None:
        self._rng = rng
        self._base_w = rng.uniform(80, 250)  # fridge, router, standby of everything else
        self._energy_kwh = rng.uniform(1_000, 40_000)
        self._voltage = rng.uniform(226, 234)
        self._last_t = start
        self._on: dict[str, bool] = {name: False for name, *_ in APPLIANCES}
        self._switched: dict[str, str] = {}  # appliance → mode a person set: on/off/standby
        self.episodes = Episodes(rng, start, incident_every_s, {"voltage_sag": 1.0})

    def command(self, name: str, args: dict[str, Any], t: float) -> Outcome:
        if name != "switch":
            return rejected(f"the meter has no command {name!r}")
        appliance = args["appliance"]
        if appliance not in APPLIANCE_NAMES:
            return rejected(
                f"no appliance {appliance!r} in this home; it has: {', '.join(APPLIANCE_NAMES)}"
            )
        self._switched[appliance] = args["mode"]
        return SUCCEEDED

    def apply_desired(self, state: dict[str, Any], t: float) -> dict[str, Any]:
        wanted: dict[str, str] = state.get("appliances") or {}
        for appliance, mode in wanted.items():
            if appliance in APPLIANCE_NAMES:  # one this home lacks is absent from the report
                self._switched[appliance] = mode
        return {"appliances": {a: self._mode(a) for a in APPLIANCE_NAMES}}

    def _mode(self, appliance: str) -> str:
        return self._switched.get(appliance) or ("on" if self._on[appliance] else "standby")

    def fields(self, t: float) -> dict[str, Any]:
        rng = self._rng
        dt = max(0.0, t - self._last_t)
        self._last_t = t
        hour = hour_of_day(t)
        overload = self.episodes.progress("overload", t) is not None
        power = self._base_w
        for name, watts, standby, (begin, end), chance in APPLIANCES:
            if overload:
                self._on[name] = True
            elif begin <= hour < end:
                # Appliances stay on for a while: switching is rare compared to readings.
                if rng.random() < chance * 0.1:
                    self._on[name] = not self._on[name]
            else:
                self._on[name] = False
            mode = self._switched.get(name)
            if mode is None or overload:
                power += watts if self._on[name] else standby
            else:  # a person's switch holds
                power += {"on": watts, "standby": standby, "off": 0.0}[mode]
        power *= rng.uniform(0.97, 1.03)
        # The counter integrates the power since the last reading.
        self._energy_kwh += power * dt / 3_600_000
        voltage = self._voltage - power / 2000 + rng.gauss(0, 0.6)
        if (sag := self.episodes.progress("voltage_sag", t)) is not None:
            voltage -= 28 * min(1.0, sag / 0.05, (1 - sag) / 0.05)
        return {
            "power_w": round(clamp(power, 0, 50_000), 1),
            "energy_kwh": round(self._energy_kwh, 4),
            "voltage_v": round(clamp(voltage, 150, 300), 1),
        }
