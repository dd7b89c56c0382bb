"""What a behaviour model is: one simulated device producing plausible fields over time."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable


class Behaviour(Protocol):
    episodes: Episodes

    def fields(self, t: float) -> dict[str, Any] | None:
        """The device's measurement fields at epoch time `t` (called with increasing `t`), or
        None when the device does not report at this moment (a blood-pressure meter measures
        twice a day)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a device did with a command: the `status` and `reason` of its `CommandResult`,
    and the `output` of one that reports something (a pacemaker's read-out)."""

    status: Literal["succeeded", "failed", "rejected"]
    reason: str | None = None
    output: dict[str, Any] | None = None


def rejected(reason: str) -> Outcome:
    return Outcome("rejected", reason)


SUCCEEDED = Outcome("succeeded")


@runtime_checkable
class Obeys(Protocol):
    """A behaviour that acts on the downlink (simulators/downlink.py): commands and desired
    state change what its next readings say. The downlink has already checked the command
    against the type's catalogue (devices/), so `args` are the validated arguments."""

    def command(self, name: str, args: dict[str, Any], t: float) -> Outcome:
        """Executes command `name` at epoch time `t`."""

    def apply_desired(self, state: dict[str, Any], t: float) -> dict[str, Any]:
        """Applies the (validated) desired state at `t`, only the fields it names; returns
        the state to report: every setting the type's desired state has, as the device now has
        it (one it could not apply shows what it has instead, so the difference is visible)."""


@runtime_checkable
class Scheduled(Protocol):
    """A behaviour that reports on its own timetable rather than on every turn (a blood-pressure
    meter measures mornings and evenings). An interval the user sets applies to every type, as
    `--interval` says, so the fleet then asks it to report on every turn."""

    def report_every_turn(self) -> None: ...


class BehaviourFactory(Protocol):
    # Read-only, so that a behaviour class's own constants satisfy them.
    @property
    def id_prefix(self) -> str: ...

    @property
    def default_interval_s(self) -> float: ...

    @property
    def episode_kinds(self) -> tuple[str, ...]:
        """What a scenario may script for this type, besides the `offline` every type has
        (that one is the fleet's: see simulators/fleet.py)."""

    def __call__(
        self, rng: random.Random, start: float, *, incident_every_s: float | None
    ) -> Behaviour: ...


def substeps(last_t: float, t: float, max_step_s: float) -> list[tuple[float, float]]:
    """The time from `last_t` to `t` cut into equal steps of at most `max_step_s`, as (end of
    the step, its seconds), the last ending at `t`.

    A gap no longer than `max_step_s` is one step of exactly `t - last_t` (never negative), so
    a model that integrates in steps produces the same numbers as one that does not. A long
    gap (a long interval) is integrated in steps, so a heater or a compressor that was on at
    the last reading does not run on for hours past its thermostat's setting.
    """
    dt = max(0.0, t - last_t)
    # The tolerance keeps an interval equal to `max_step_s` at one step despite rounding.
    n = max(1, math.ceil(dt / max_step_s - 1e-9))
    if n == 1:
        return [(t, dt)]
    step = dt / n
    return [(last_t + k * step, step) for k in range(1, n)] + [(t, step)]


def clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def hour_of_day(t: float, utc_offset_h: float = 1.0) -> float:
    """Local hour 0..24 (farms and homes in CET by default)."""
    return ((t / 3600.0) + utc_offset_h) % 24.0


def daily_wave(t: float, peak_hour: float) -> float:
    """-1..1, highest at `peak_hour` local time."""
    return math.cos((hour_of_day(t) - peak_hour) / 24.0 * 2 * math.pi)


class Episodes:
    """When a device's episodes of trouble happen: random ones and scripted ones.

    Random episodes are a Poisson process with mean gap `every_s`, each of a kind drawn from
    `kinds` (by weight) and lasting 20–40 % of the mean gap, at most two days, so a demo with an
    incident every few minutes shows alerts raised and resolved while you watch. A scenario adds
    scripted episodes with `add` ("cow-0007: fever at 06:00 for 6 h").
    """

    def __init__(
        self,
        rng: random.Random,
        start: float,
        every_s: float | None,
        kinds: dict[str, float],
    ) -> None:
        self._rng = rng
        self._every_s = every_s
        self._kinds = list(kinds)
        self._weights = list(kinds.values())
        self._scripted: list[tuple[str, float, float]] = []
        self._random_kind = ""
        self._start_at = math.inf
        self._end_at = math.inf
        if every_s:
            self._schedule(start)

    def add(self, kind: str, start: float, duration_s: float) -> None:
        self._scripted.append((kind, start, start + duration_s))

    def _schedule(self, after: float) -> None:
        assert self._every_s
        self._start_at = after + self._rng.expovariate(1.0 / self._every_s)
        self._end_at = self._start_at + min(172_800.0, self._rng.uniform(0.2, 0.4) * self._every_s)
        self._random_kind = self._rng.choices(self._kinds, self._weights)[0]

    def progress(self, kind: str, t: float) -> float | None:
        """None when no episode of `kind` is under way at `t`, else how far into it (0..1)."""
        for scripted_kind, begin, end in self._scripted:
            if scripted_kind == kind and begin <= t < end:
                return (t - begin) / (end - begin)
        while t >= self._end_at:
            self._schedule(self._end_at)
        if kind != self._random_kind or t < self._start_at:
            return None
        return (t - self._start_at) / (self._end_at - self._start_at)


def ramp(progress: float | None, edge: float = 0.1) -> float:
    """0..1: rises over the first `edge` of an episode, holds, falls over the last `edge`."""
    if progress is None:
        return 0.0
    return max(0.0, min(1.0, progress / edge, (1 - progress) / edge))
