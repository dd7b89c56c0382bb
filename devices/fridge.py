"""`fridge`: a connected fridge that should stay cold and closed."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from devices.base import Reading
from devices.commands import CommandSpec, DesiredSpec, Strict
from devices.rules import ThresholdRule, silent
from devices.types import DeviceType


class FridgeReading(Reading):
    temp_c: Annotated[float, Field(ge=-30, le=40, description="inside temperature, °C")]
    door_open: Annotated[bool, Field(description="door open")]


FridgeSetpoint = Annotated[float, Field(ge=-25, le=10, description="target temperature, °C")]


class FridgeArguments(Strict):
    setpoint_c: FridgeSetpoint


class FridgeDesired(Strict):
    setpoint_c: FridgeSetpoint | None = None


COMMANDS = (
    CommandSpec("set_temperature", "Cool towards a new temperature", arguments=FridgeArguments),
)

DEVICE = DeviceType(
    name="fridge",
    description="Fridge: inside temperature, door open",
    reading=FridgeReading,
    commands=COMMANDS,
    desired=DesiredSpec(FridgeDesired),
    rules=(
        ThresholdRule(
            name="fridge_warm",
            field="temp_c",
            direction="above",
            raise_at=8,
            clear_at=6,
            severity="warning",
            for_s=600,  # a door opened for a meal is not a warm fridge
            message="fridge at {value:.1f} °C",
        ),
        silent(),
    ),
    example={"ts": 1795334400, "seq": 15, "temp_c": 4.2, "door_open": False},
)
