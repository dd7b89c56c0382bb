"""`cow_tracker`: a dairy cow collar that tells the farmer when she is sick, still or in heat."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from devices.base import Reading
from devices.rules import ThresholdRule
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
        ),
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
