"""Rules on a device's position: inside or outside a place (`GeofenceRule`), arriving at one
(`ArrivalRule`). The distances are judged in ingest/alerts/conditions.py."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from devices.rule_base import MAX_DURATION_S, RuleBase, format_seconds

Where = Literal["inside", "outside"]


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
