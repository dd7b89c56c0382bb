"""`cow_tracker`: a dairy cow collar that tells the farmer when she is sick, still or in heat."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from devices.base import Reading
from devices.rules import BaselineRule, ThresholdRule, silent
from devices.types import DeviceType


class CowTrackerReading(Reading):
    body_temp_c: Annotated[float, Field(ge=30, le=45, description="body temperature, °C")]
    activity: Annotated[int, Field(ge=0, le=10_000, description="steps in the last hour")]
    rumination_min: Annotated[
        int, Field(ge=0, le=60, description="minutes ruminating in the last hour")
    ]
    lat: Annotated[float, Field(ge=-90, le=90, description="latitude, degrees")]
    lon: Annotated[float, Field(ge=-180, le=180, description="longitude, degrees")]
    battery_pct: Annotated[float, Field(ge=0, le=100, description="collar battery, %")]


DEVICE = DeviceType(
    name="cow_tracker",
    description="Dairy cow collar: body temperature, activity, rumination, position, battery",
    reading=CowTrackerReading,
    rules=(
        ThresholdRule(
            name="fever",
            field="body_temp_c",
            direction="above",
            raise_at=39.5,
            clear_at=39.2,
            severity="warning",
            message="fever: body temperature {value:.1f} °C",
            # One warm reading (a drink of warm water, a collar in the sun) is not a fever.
            min_readings=3,
            clear_readings=3,
        ),
        ThresholdRule(
            name="not_moving",
            field="activity",
            direction="below",
            raise_at=20,
            clear_at=40,
            for_s=2 * 3600,
            severity="warning",
            message="not moving: {value:.0f} steps in the last hour",
        ),
        # A cow in heat walks 2-4x her usual for the time of day; a day of history first.
        BaselineRule(
            name="in_heat",
            field="activity",
            compare="ratio",
            direction="above",
            raise_at=1.8,
            clear_at=1.4,
            baseline="same_hour",
            recent_s=3600,
            for_s=3600,
            min_history_s=86_400,
            severity="info",
            message="in heat: activity {value:.1f}x her usual for the hour",
        ),
        # About a day before calving, body temperature drops by ~0.5 °C.
        BaselineRule(
            name="calving_soon",
            field="body_temp_c",
            compare="offset",
            direction="below",
            raise_at=-0.4,
            clear_at=-0.2,
            baseline="rolling_24h",
            recent_s=3600,
            for_s=3600,
            min_history_s=86_400,
            severity="info",
            message="calving soon? temperature {value:+.2f} °C from her usual {baseline:.1f} °C",
        ),
        silent(),
    ),
    example={
        "ts": "2026-11-22T06:00:00Z",
        "seq": 1042,
        "body_temp_c": 38.6,
        "activity": 420,
        "rumination_min": 31,
        "lat": 52.0907,
        "lon": 5.1214,
        "battery_pct": 87.5,
    },
)
