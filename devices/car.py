"""`car`: a connected car: where it is, how fast, whether it is locked, how much range is left."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from devices.base import Reading
from devices.commands import CommandSpec, DesiredSpec, Strict
from devices.rules import ThresholdRule, silent
from devices.types import DeviceType


class CarReading(Reading):
    lat: Annotated[float, Field(ge=-90, le=90, description="latitude, degrees")]
    lon: Annotated[float, Field(ge=-180, le=180, description="longitude, degrees")]
    speed_kmh: Annotated[float, Field(ge=0, le=300, description="speed, km/h")]
    locked: Annotated[bool, Field(description="doors locked")]
    energy_pct: Annotated[float, Field(ge=0, le=100, description="fuel or battery level, %")]


class CarDesired(Strict):
    locked: bool | None = None


COMMANDS = (
    CommandSpec("lock", "Lock the doors", expiry_s=120),
    CommandSpec("unlock", "Unlock the doors", expiry_s=60),  # an old unlock is a risk: short
    CommandSpec("flash_lights", "Flash the lights (find the car in a car park)", expiry_s=60),
)

DEVICE = DeviceType(
    name="car",
    description="Connected car: position, speed, locked, fuel or battery level",
    reading=CarReading,
    commands=COMMANDS,
    desired=DesiredSpec(CarDesired),
    rules=(
        ThresholdRule(
            name="low_energy",
            field="energy_pct",
            direction="below",
            raise_at=10,
            clear_at=15,
            severity="info",
            message="{value:.0f} % left",
        ),
        silent(at_least_s=3600),
    ),
    example={
        "ts": 1795334400.5,
        "seq": 7001,
        "lat": 52.0705,
        "lon": 4.3007,
        "speed_kmh": 48.5,
        "locked": False,
        "energy_pct": 64.0,
    },
)
