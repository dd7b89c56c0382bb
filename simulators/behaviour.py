"""What a behaviour model is: one simulated device producing plausible fields over time."""

from __future__ import annotations

import math
import random
from typing import Any, Protocol


class Behaviour(Protocol):
    def fields(self, t: float) -> dict[str, Any]:
        """The device's measurement fields at epoch time `t` (called with increasing `t`)."""


class BehaviourFactory(Protocol):
    id_prefix: str

    def __call__(
        self, rng: random.Random, start: float, *, incident_every_s: float | None
    ) -> Behaviour: ...


def clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def hour_of_day(t: float, utc_offset_h: float = 1.0) -> float:
    """Local hour 0..24 (farms and homes in CET by default)."""
    return ((t / 3600.0) + utc_offset_h) % 24.0


def daily_wave(t: float, peak_hour: float) -> float:
    """-1..1, highest at `peak_hour` local time."""
    return math.cos((hour_of_day(t) - peak_hour) / 24.0 * 2 * math.pi)


class Incidents:
    """When a device's episodes of trouble happen: a Poisson process, each lasting a while.

    Episodes last 20–40 % of the mean gap (at most two days), so a demo with an incident every
    few minutes shows alerts being raised and resolved while you watch.
    """

    def __init__(self, rng: random.Random, start: float, every_s: float | None) -> None:
        self._rng = rng
        self._every_s = every_s
        self._start_at = math.inf
        self._end_at = math.inf
        if every_s:
            self._schedule(start)

    def _schedule(self, after: float) -> None:
        assert self._every_s
        self._start_at = after + self._rng.expovariate(1.0 / self._every_s)
        self._end_at = self._start_at + min(172_800.0, self._rng.uniform(0.2, 0.4) * self._every_s)

    def progress(self, t: float) -> float | None:
        """None when no incident is under way at `t`, else how far into it (0..1)."""
        while t >= self._end_at:
            self._schedule(self._end_at)
        if t < self._start_at:
            return None
        return (t - self._start_at) / (self._end_at - self._start_at)
