"""Time for simulators: the wall clock, or simulated time that runs as fast as it can.

Behaviour models never read the clock themselves; the fleet hands them the time, so a burst
run (simulated time) and a real-time run produce the same readings for the same seed.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""

    def wait_until(self, t: float, stop: threading.Event) -> bool:
        """Returns once the clock reads `t` (True), or early when `stop` is set (False)."""


class WallClock:
    def now(self) -> float:
        return time.time()

    def wait_until(self, t: float, stop: threading.Event) -> bool:
        delay = t - time.time()
        if delay > 0:
            return not stop.wait(delay)
        return not stop.is_set()


class SimulatedClock:
    """Jumps straight to the next reading's time: a day of readings is published in seconds."""

    def __init__(self, start: float) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def wait_until(self, t: float, stop: threading.Event) -> bool:
        self._now = max(self._now, t)
        return not stop.is_set()


class ScaledClock:
    """Simulated time that runs `speed` times faster than the wall clock ("a day in a minute"
    is speed 1440)."""

    def __init__(self, start: float, speed: float) -> None:
        self._start = start
        self._speed = speed
        self._began = time.monotonic()

    def now(self) -> float:
        return self._start + (time.monotonic() - self._began) * self._speed

    def wait_until(self, t: float, stop: threading.Event) -> bool:
        delay = (t - self.now()) / self._speed
        if delay > 0:
            return not stop.wait(delay)
        return not stop.is_set()
