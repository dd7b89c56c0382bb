"""`humidity_meter`: relative humidity and temperature, e.g. in a bathroom or a cellar."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from devices.base import Reading
from devices.rules import ThresholdRule, silent
from devices.types import DeviceType


class HumidityMeterReading(Reading):
    humidity_pct: Annotated[float, Field(ge=0, le=100, description="relative humidity, %")]
    temp_c: Annotated[float, Field(ge=-40, le=85, description="temperature, °C")]


DEVICE = DeviceType(
    name="humidity_meter",
    description="Humidity meter: relative humidity, temperature",
    reading=HumidityMeterReading,
    rules=(
        # Above ~80 % for long, mould grows; the hysteresis keeps a shower from flapping it.
        ThresholdRule(
            name="damp",
            field="humidity_pct",
            direction="above",
            raise_at=85,
            clear_at=70,
            severity="info",
            for_s=90 * 60,  # a shower is damp for an hour at most
            message="humidity {value:.0f} %",
        ),
        silent(),
    ),
    example={"ts": 1795334400, "seq": 3, "humidity_pct": 54.0, "temp_c": 21.3},
)
