"""Alert rules as data: what counts as trouble for a device, and for how long.

Rules are plain frozen values. Each device type ships its defaults (in its own module); a rules
file can override or add rules per tenant, device type and device (`ingest/alerts/rulebook.py`);
the engine that evaluates them is `ingest/alerts/engine.py`. Six kinds (what they share is in
`rule_base.py`, the two on positions in `place_rules.py`):

- `ThresholdRule`: a field at or above (or below) a level, with a separate clear level
  (hysteresis), e.g. raise at body_temp_c >= 39.5, clear below 39.2.
- `DeltaRule`: how much a field changed over a window (or since the previous reading), e.g. a
  meter's counter going backwards, a room not warming while the heater is on.
- `BaselineRule`: a field against the device's own history, as a ratio or an offset, e.g. a
  cow's activity at 1.8x her usual for this hour of the day (heat).
- `AbsenceRule`: no reading for N of the device's own intervals (a deadman switch).
- `GeofenceRule`: a position inside or outside a circle or polygon.
- `ArrivalRule`: a moving device that will reach a place within a time at its speed (a car
  two hours from home).

Every kind shares the lifecycle settings that damp noise and flapping, all judged on the
readings' own timestamps: the condition must hold for `for_s` seconds and `min_readings`
consecutive readings before an alert is raised, and be clear for `clear_for_s` seconds and
`clear_readings` consecutive readings before it is resolved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from devices.place_rules import ArrivalRule, GeofenceRule
from devices.rule_base import MAX_DURATION_S, RuleBase, Severity, format_seconds

Direction = Literal["above", "below"]
Compare = Literal["ratio", "offset"]
BaselineKind = Literal["rolling_24h", "same_hour"]


def _check_levels(direction: Direction, raise_at: float, clear_at: float) -> None:
    # A clear level on the wrong side of the raise level would resolve at once.
    if not (math.isfinite(raise_at) and math.isfinite(clear_at)):
        raise ValueError("raise_at and clear_at must be finite numbers")
    if direction == "above" and not clear_at <= raise_at:
        raise ValueError("clear_at must be <= raise_at when the direction is 'above'")
    if direction == "below" and not clear_at >= raise_at:
        raise ValueError("clear_at must be >= raise_at when the direction is 'below'")
    if direction not in ("above", "below"):
        raise ValueError("direction must be 'above' or 'below'")


def _alarm(direction: Direction, raise_at: float, value: float) -> bool:
    return value >= raise_at if direction == "above" else value < raise_at


def _cleared(direction: Direction, clear_at: float, value: float) -> bool:
    return value < clear_at if direction == "above" else value >= clear_at


def _condition(
    direction: Direction, raise_at: float, clear_at: float, what: str
) -> tuple[str, str]:
    op, back = (">=", "<") if direction == "above" else ("<", ">=")
    return f"{what} {op} {raise_at:g}", f"{what} {back} {clear_at:g}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ThresholdRule(RuleBase):
    """Raise when `field` is at or above (`direction="above"`) or below `raise_at`."""

    field: str
    direction: Direction
    raise_at: float
    clear_at: float

    kind: ClassVar[str] = "threshold"

    def __post_init__(self) -> None:
        RuleBase.__post_init__(self)
        _check_levels(self.direction, self.raise_at, self.clear_at)

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.field,)

    def is_triggered(self, value: float) -> bool:
        return _alarm(self.direction, self.raise_at, value)

    def is_cleared(self, value: float) -> bool:
        return _cleared(self.direction, self.clear_at, value)

    def condition(self) -> tuple[str, str]:
        return _condition(self.direction, self.raise_at, self.clear_at, self.field)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeltaRule(RuleBase):
    """Raise on the change of `field` over `window_s` (0: since the previous reading).

    With `while_field` (a boolean field), the window only counts readings where that field
    is true, and starts again whenever it is false: "heating for an hour and the room warmed
    by less than 0.2 °C".
    """

    field: str
    direction: Direction
    raise_at: float
    clear_at: float
    window_s: float = 0.0
    while_field: str | None = None

    kind: ClassVar[str] = "delta"

    def __post_init__(self) -> None:
        RuleBase.__post_init__(self)
        _check_levels(self.direction, self.raise_at, self.clear_at)
        if not (0 <= self.window_s <= MAX_DURATION_S):
            raise ValueError("window must be a duration from zero to 365d")

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.field,) if self.while_field is None else (self.field, self.while_field)

    def is_triggered(self, delta: float) -> bool:
        return _alarm(self.direction, self.raise_at, delta)

    def is_cleared(self, delta: float) -> bool:
        return _cleared(self.direction, self.clear_at, delta)

    def condition(self) -> tuple[str, str]:
        span = f"over {format_seconds(self.window_s)}" if self.window_s else "since last reading"
        what = f"change of {self.field} {span}"
        if self.while_field:
            what += f" while {self.while_field}"
        raised, resolved = _condition(self.direction, self.raise_at, self.clear_at, what)
        if self.while_field:
            resolved += f", or {self.while_field} false"
        return raised, resolved


@dataclass(frozen=True, slots=True, kw_only=True)
class BaselineRule(RuleBase):
    """Raise when `field` strays from the device's own baseline.

    `compare="ratio"` judges value / baseline, `"offset"` judges value - baseline. The value is
    the mean over the last `recent_s` seconds (0: the reading itself). The baseline is the
    median of the device's last 24 hourly means (`rolling_24h`), or the device's usual mean
    for this hour of the day (`same_hour`, learnt over days, for fields with a daily rhythm).
    Until `min_history_s` of history exists the rule says nothing. Readings taken while the
    rule is pending, or while any alert of the device is open, do not feed the baseline: a
    cow's activity during a fever is not her usual, nor is a heat the new normal.
    """

    field: str
    compare: Compare
    direction: Direction
    raise_at: float
    clear_at: float
    baseline: BaselineKind = "rolling_24h"
    recent_s: float = 0.0
    min_history_s: float = 86_400.0

    kind: ClassVar[str] = "baseline"

    def __post_init__(self) -> None:
        RuleBase.__post_init__(self)
        _check_levels(self.direction, self.raise_at, self.clear_at)
        if self.compare not in ("ratio", "offset"):
            raise ValueError("compare must be 'ratio' or 'offset'")
        if self.baseline not in ("rolling_24h", "same_hour"):
            raise ValueError("baseline must be 'rolling_24h' or 'same_hour'")
        if not (0 <= self.recent_s <= 6 * 3600):
            raise ValueError("recent must be between 0 and 6h")
        if not (0 <= self.min_history_s <= 30 * 86_400):
            raise ValueError("min_history must be between 0 and 30d")

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.field,)

    def is_triggered(self, score: float) -> bool:
        return _alarm(self.direction, self.raise_at, score)

    def is_cleared(self, score: float) -> bool:
        return _cleared(self.direction, self.clear_at, score)

    def condition(self) -> tuple[str, str]:
        value = (
            f"mean {self.field} over {format_seconds(self.recent_s)}"
            if self.recent_s
            else (self.field)
        )
        base = "its usual for the hour" if self.baseline == "same_hour" else "its 24 h median"
        what = f"{value} / {base}" if self.compare == "ratio" else f"{value} - {base}"
        return _condition(self.direction, self.raise_at, self.clear_at, what)


@dataclass(frozen=True, slots=True, kw_only=True)
class AbsenceRule(RuleBase):
    """Raise when a device sends nothing for `after_intervals` of its own intervals.

    The interval is learnt from the device's readings; the silence must also last at least
    `at_least_s`. Resolved by the device's next reading.
    """

    after_intervals: float = 5.0
    at_least_s: float = 600.0

    kind: ClassVar[str] = "absence"

    def __post_init__(self) -> None:
        RuleBase.__post_init__(self)
        if not (1 <= self.after_intervals <= 10_000):
            raise ValueError("after_intervals must be from 1 to 10000")
        if not (0 < self.at_least_s <= MAX_DURATION_S):
            raise ValueError("at_least must be a duration above zero, up to 365d")

    def condition(self) -> tuple[str, str]:
        return (
            f"nothing for {self.after_intervals:g} intervals "
            f"(at least {format_seconds(self.at_least_s)})",
            "the next reading",
        )


Rule = ThresholdRule | DeltaRule | BaselineRule | AbsenceRule | GeofenceRule | ArrivalRule
RULE_KINDS: dict[str, type[Rule]] = {
    cls.kind: cls
    for cls in (ThresholdRule, DeltaRule, BaselineRule, AbsenceRule, GeofenceRule, ArrivalRule)
}


def describe(rule: Rule) -> tuple[str, str]:
    """(raised when, resolved when), for people: `rules list` and docs/alerts.md."""
    (raised, resolved), (hold, settle) = rule.condition(), rule.damping()
    return raised + hold, resolved + settle


def silent(
    *, after_intervals: float = 5.0, at_least_s: float = 600.0, severity: Severity = "warning"
) -> AbsenceRule:
    """The deadman rule every device type ships with."""
    return AbsenceRule(
        name="silent",
        severity=severity,
        message="no reading for {silent_for}",
        after_intervals=after_intervals,
        at_least_s=at_least_s,
    )
