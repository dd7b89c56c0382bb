"""A home blood-pressure meter, measured twice a day: in the morning and in the evening.

The meter reports only when it is used (`fields` returns None otherwise), around 07:00 and
21:00 with a quarter of an hour's scatter; with an interval the user chose, on every turn.
Episode: `hypertensive_crisis` (systolic 185–210).
"""

from __future__ import annotations

import random
from typing import Any

from simulators.behaviour import Episodes, clamp, hour_of_day

MEASURE_AT_HOURS = (7.0, 21.0)


class BloodPressureBehaviour:
    id_prefix = "bp"
    default_interval_s = 300.0  # how often the meter checks whether it is time to measure
    episode_kinds = ("hypertensive_crisis",)

    def __init__(
        self, rng: random.Random, start: float, *, incident_every_s: float | None = None
    ) -> None:
        self._rng = rng
        self._systolic = rng.uniform(112, 150)
        self._diastolic = self._systolic * rng.uniform(0.58, 0.68)
        self._pulse = rng.uniform(58, 80)
        self._offset_h = rng.uniform(-0.25, 0.25)
        self._last_hour: float | None = None
        self._every_turn = False
        self.episodes = Episodes(rng, start, incident_every_s, {"hypertensive_crisis": 1.0})

    def report_every_turn(self) -> None:
        """Measures on every turn (an interval the user chose), not only mornings and evenings."""
        self._every_turn = True

    def fields(self, t: float) -> dict[str, Any] | None:
        hour = (hour_of_day(t) - self._offset_h) % 24
        previous, self._last_hour = self._last_hour, hour
        due = previous is not None and any(_crossed(previous, hour, at) for at in MEASURE_AT_HOURS)
        if not (due or self._every_turn):
            return None
        rng = self._rng
        morning = 6 if hour < 12 else 0  # pressure is higher in the morning
        systolic = self._systolic + morning + rng.gauss(0, 5)
        if self.episodes.progress("hypertensive_crisis", t) is not None:
            systolic = rng.uniform(185, 210)
        diastolic = min(systolic - 20, self._diastolic + morning / 2 + rng.gauss(0, 3))
        return {
            "systolic_mmhg": int(clamp(systolic, 51, 260)),
            "diastolic_mmhg": int(clamp(diastolic, 30, 160)),
            "pulse_bpm": int(clamp(self._pulse + rng.gauss(0, 4), 30, 220)),
        }


def _crossed(previous: float, now: float, at: float) -> bool:
    if previous <= now:
        return previous < at <= now
    return at > previous or at <= now  # past midnight
