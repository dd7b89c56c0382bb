"""The place rules' conditions (geofence, arrival) and the distances on the Earth they use."""

from __future__ import annotations

import math
from typing import Any

from devices.fast import AnyReading
from devices.place_rules import ArrivalRule, GeofenceRule
from ingest.alerts.verdict import Verdict


class ArrivalState:
    """The distance at the previous reading, and the farthest since the device last arrived:
    only a device getting closer is arriving (a car leaving home is minutes from it, and not
    arriving), and only from a trip (a hop to the corner and back is not one)."""

    __slots__ = ("distance_m", "farthest_m")

    def __init__(self) -> None:
        self.distance_m = math.inf
        self.farthest_m = 0.0

    def dump(self) -> list[Any]:
        return [None if math.isinf(self.distance_m) else self.distance_m, self.farthest_m]

    @classmethod
    def load(cls, data: list[Any]) -> ArrivalState:
        state = cls()
        if data and data[0] is not None:
            state.distance_m = float(data[0])
        if len(data) > 1:
            state.farthest_m = float(data[1])
        return state


EARTH_RADIUS_M = 6_371_000.0


def geofence(rule: GeofenceRule, reading: AnyReading) -> tuple[Verdict, float]:
    lat = float(getattr(reading, rule.lat_field))
    lon = float(getattr(reading, rule.lon_field))
    outside_by = boundary_distance_m(rule, lat, lon)  # < 0: inside
    if rule.where == "inside":
        alarm, clear = outside_by <= 0, outside_by > rule.margin_m
    else:
        alarm, clear = outside_by > 0, outside_by < -rule.margin_m
    return (Verdict.ALARM if alarm else Verdict.CLEAR if clear else Verdict.HOLD), outside_by


def arrival(rule: ArrivalRule, state: ArrivalState, reading: AnyReading) -> tuple[Verdict, float]:
    """ALARM when the device gets closer and the estimated seconds to `center` are `within_s`
    or less; the value is that estimate (0 once arrived). Stopped, crawling or not getting
    closer: HOLD, whatever the distance (a detour resolves it: the estimate grows)."""
    lat = float(getattr(reading, rule.lat_field))
    lon = float(getattr(reading, rule.lon_field))
    distance_m = haversine_m(lat, lon, *rule.center)
    before, state.distance_m = state.distance_m, distance_m
    if distance_m <= rule.arrived_m:
        state.farthest_m = distance_m  # arrived: the next trip starts here
        return Verdict.CLEAR, 0.0
    state.farthest_m = max(state.farthest_m, distance_m)
    speed_kmh = float(getattr(reading, rule.speed_field))
    if not speed_kmh >= rule.min_speed_kmh:
        return Verdict.HOLD, -1.0  # no estimate; a HOLD's value is never reported
    eta_s = distance_m / (speed_kmh / 3.6)
    if eta_s <= rule.within_s:
        # A GPS fix wanders by metres: closer means closer by more than that.
        arriving = distance_m < before - 20 and state.farthest_m >= rule.min_trip_m
        return (Verdict.ALARM if arriving else Verdict.HOLD), eta_s
    return (Verdict.CLEAR if eta_s > rule.within_s + rule.detour_s else Verdict.HOLD), eta_s


def boundary_distance_m(rule: GeofenceRule, lat: float, lon: float) -> float:
    """Metres from the shape's boundary: positive outside, negative inside."""
    if rule.center is not None and rule.radius_m is not None:
        return haversine_m(lat, lon, *rule.center) - rule.radius_m
    assert rule.polygon is not None
    # Small shapes: a local flat projection around the point is accurate to well under 1 %.
    scale_x = math.cos(math.radians(lat)) * EARTH_RADIUS_M * math.pi / 180
    scale_y = EARTH_RADIUS_M * math.pi / 180
    corners = [((c_lon - lon) * scale_x, (c_lat - lat) * scale_y) for c_lat, c_lon in rule.polygon]
    inside = False
    nearest = math.inf
    for (x1, y1), (x2, y2) in zip(corners, corners[1:] + corners[:1], strict=True):
        if (y1 > 0) != (y2 > 0) and (x2 - x1) * (0 - y1) / (y2 - y1) + x1 > 0:
            inside = not inside
        nearest = min(nearest, _segment_distance(x1, y1, x2, y2))
    return -nearest if inside else nearest


def _segment_distance(x1: float, y1: float, x2: float, y2: float) -> float:
    """Distance from the origin to the segment (x1, y1)-(x2, y2)."""
    dx, dy = x2 - x1, y2 - y1
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, -(x1 * dx + y1 * dy) / length2))
    return math.hypot(x1 + t * dx, y1 + t * dy)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))
