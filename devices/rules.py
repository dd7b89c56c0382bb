"""Alert rules as data: what counts as trouble for a device, and for how long.

Rules are plain frozen values. Each device type ships its defaults (in its own module); a rules
file can override or add rules per tenant, device type and device (`ingest/alerts/rulebook.py`);
the engine that evaluates them is `ingest/alerts/engine.py`. Six kinds:

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
import re
import string
from dataclasses import dataclass
from typing import ClassVar, Literal

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
Direction = Literal["above", "below"]
Compare = Literal["ratio", "offset"]
BaselineKind = Literal["rolling_24h", "same_hour"]
Where = Literal["inside", "outside"]

MAX_DURATION_S = 365 * 86_400.0

# What a rule's message may name; each kind fills the ones that mean something for it.
MESSAGE_FIELDS = frozenset(
    {"value", "baseline", "delta", "distance_m", "silent_for", "field", "eta", "minutes"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleBase:
    name: str
    severity: Severity
    message: str
    for_s: float = 0.0  # the condition holds this long before the alert is raised
    min_readings: int = 1  # ... and for this many consecutive readings
    clear_for_s: float = 0.0  # clear this long before the alert is resolved
    clear_readings: int = 1  # ... and for this many consecutive readings

    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
        if not all(0 <= v <= MAX_DURATION_S for v in (self.for_s, self.clear_for_s)):
            raise ValueError("for and clear_for must be durations from zero to 365d")
        if self.min_readings < 1 or self.clear_readings < 1:
            raise ValueError("min_readings and clear_readings must be at least 1")
        try:
            parsed = list(string.Formatter().parse(self.message))
        except ValueError as exc:
            raise ValueError(f"message {self.message!r} is not a template: {exc}") from None
        for _, _, spec, _ in parsed:
            # `{value:{x}}` nests a lookup; `{value:.999999999f}` builds a gigabyte.
            if spec and ("{" in spec or any(int(n) > 40 for n in re.findall(r"\d+", spec))):
                raise ValueError(f"message {self.message!r}: format {spec!r} is not allowed")
        names = [name for _, name, _, _ in parsed]
        for name in names:
            if name is not None and name not in MESSAGE_FIELDS:
                known = ", ".join(sorted(MESSAGE_FIELDS))
                raise ValueError(f"message names {{{name}}}; it may use {known}")
        try:  # numbers are floats, silent_for and field are text: `{value:d}` cannot work
            self.message.format(
                value=1.5,
                baseline=1.5,
                delta=1.5,
                distance_m=1.5,
                silent_for="1m",
                field="f",
                eta="18:40 UTC",
                minutes=1.5,
            )
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise ValueError(f"message {self.message!r} cannot be filled in: {exc}") from None

    @property
    def fields(self) -> tuple[str, ...]:
        """The reading fields this rule reads (checked against the device type)."""
        return ()

    def damping(self) -> tuple[str, str]:
        """What holds an alert back: (before raising, before resolving)."""
        return (
            _damping(self.for_s, self.min_readings),
            _damping(self.clear_for_s, self.clear_readings),
        )


def _damping(seconds: float, readings: int) -> str:
    parts = []
    if seconds:
        parts.append(f"for {format_seconds(seconds)}")
    if readings > 1:
        parts.append(f"{readings} readings in a row")
    return f" ({', '.join(parts)})" if parts else ""


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


@dataclass(frozen=True, slots=True, kw_only=True)
class GeofenceRule(RuleBase):
    """Raise when the position (`lat_field`, `lon_field`) is `inside` or `outside` a shape.

    The shape is a circle (`center`, `radius_m`) or a polygon of (lat, lon) corners. The alert
    resolves only once the position is `margin_m` metres back on the other side, so a device
    on the boundary does not flap.
    """

    where: Where
    center: tuple[float, float] | None = None
    radius_m: float | None = None
    polygon: tuple[tuple[float, float], ...] | None = None
    margin_m: float = 50.0
    lat_field: str = "lat"
    lon_field: str = "lon"

    kind: ClassVar[str] = "geofence"

    def __post_init__(self) -> None:
        RuleBase.__post_init__(self)
        if self.where not in ("inside", "outside"):
            raise ValueError("where must be 'inside' or 'outside'")
        circle = self.center is not None or self.radius_m is not None
        if circle == (self.polygon is not None):
            raise ValueError("give either center and radius_m (a circle) or polygon")
        if circle:
            if self.center is None or self.radius_m is None or not self.radius_m > 0:
                raise ValueError("a circle needs center = [lat, lon] and radius_m > 0")
            _check_point(self.center)
        else:
            assert self.polygon is not None
            if len(self.polygon) < 3:
                raise ValueError("a polygon needs at least 3 corners")
            for corner in self.polygon:
                _check_point(corner)
        if not (math.isfinite(self.margin_m) and self.margin_m >= 0):
            raise ValueError("margin_m must be zero or more")

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.lat_field, self.lon_field)

    def condition(self) -> tuple[str, str]:
        shape = (
            f"{self.radius_m:g} m around {self.center[0]:g},{self.center[1]:g}"
            if self.center is not None and self.radius_m is not None
            else f"a polygon of {len(self.polygon or ())} corners"
        )
        back = "outside" if self.where == "inside" else "inside"
        return f"{self.where} {shape}", f"{back} by {self.margin_m:g} m"


@dataclass(frozen=True, slots=True, kw_only=True)
class ArrivalRule(RuleBase):
    """Raise when a device (a car) getting closer will reach `center` within `within_s` at its
    speed; one going away, even a few minutes from it, is not arriving, and nor is one that has
    not been `min_trip_m` away since it last arrived (a hop to the shop and back).

    The estimate is the great-circle distance to `center` over the reading's speed
    (`speed_field`, km/h), so it is judged only while the device moves at `min_speed_kmh` or
    more: a car at a petrol station or in a jam keeps its state. It resolves once the estimate
    is `detour_s` longer than `within_s` (a detour, a wrong turn), or the device is within
    `arrived_m` of `center` (arrived: the next trip may raise it again). The message may name
    `{eta}` (the clock time of arrival, UTC) and `{minutes}` (minutes to go); `{value}` is the
    seconds.
    """

    center: tuple[float, float]
    within_s: float
    detour_s: float = 900.0
    arrived_m: float = 200.0
    min_trip_m: float = 5000.0
    min_speed_kmh: float = 5.0
    lat_field: str = "lat"
    lon_field: str = "lon"
    speed_field: str = "speed_kmh"

    kind: ClassVar[str] = "arrival"

    def __post_init__(self) -> None:
        RuleBase.__post_init__(self)
        _check_point(self.center)
        if not 0 < self.within_s <= MAX_DURATION_S:
            raise ValueError("within must be a duration above zero, up to 365d")
        if not (math.isfinite(self.detour_s) and self.detour_s >= 0):
            raise ValueError("detour must be zero or more")
        if not (math.isfinite(self.arrived_m) and self.arrived_m >= 0):
            raise ValueError("arrived_m must be zero or more")
        if not (math.isfinite(self.min_trip_m) and self.min_trip_m >= 0):
            raise ValueError("min_trip_m must be zero or more")
        if not (math.isfinite(self.min_speed_kmh) and self.min_speed_kmh > 0):
            raise ValueError("min_speed_kmh must be above zero (at 0 km/h nobody arrives)")

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.lat_field, self.lon_field, self.speed_field)

    def condition(self) -> tuple[str, str]:
        where = f"{self.center[0]:g},{self.center[1]:g}"
        return (
            f"arriving at {where} within {format_seconds(self.within_s)} at its speed",
            f"{format_seconds(self.within_s + self.detour_s)} away, or within {self.arrived_m:g} m",
        )


def _check_point(point: tuple[float, float]) -> None:
    if len(point) != 2 or not (-90 <= point[0] <= 90 and -180 <= point[1] <= 180):
        raise ValueError(f"{list(point)} is not a [lat, lon] pair in degrees")


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


def format_seconds(seconds: float) -> str:
    """`90` → `1m30s`, `7200` → `2h`: how durations read in rule descriptions and messages."""
    remaining = round(seconds)
    if remaining <= 0:
        return f"{seconds:g}s"
    out = ""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if remaining >= size:
            out += f"{remaining // size}{unit}"
            remaining %= size
    return out
