"""`thermostat`: a room thermostat that heats toward its setpoint."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from devices.base import Reading
from devices.commands import CommandSpec, DesiredSpec, Strict
from devices.rules import DeltaRule, ThresholdRule, silent
from devices.types import DeviceType


class ThermostatReading(Reading):
    temp_c: Annotated[float, Field(ge=-40, le=85, description="room temperature, °C")]
    setpoint_c: Annotated[float, Field(ge=5, le=35, description="target temperature, °C")]
    humidity_pct: Annotated[float, Field(ge=0, le=100, description="relative humidity, %")]
    heating: Annotated[bool, Field(description="heater is on")]


Setpoint = Annotated[float, Field(ge=5, le=35, description="target temperature, °C")]


class SetpointArguments(Strict):
    setpoint_c: Setpoint


class ThermostatDesired(Strict):
    setpoint_c: Setpoint | None = None


COMMANDS = (
    CommandSpec("set_setpoint", "Heat towards a new temperature", arguments=SetpointArguments),
)

DEVICE = DeviceType(
    name="thermostat",
    description="Room thermostat: temperature, setpoint, humidity, heater state",
    reading=ThermostatReading,
    commands=COMMANDS,
    desired=DesiredSpec(ThermostatDesired),
    rules=(
        ThresholdRule(
            name="frost_risk",
            field="temp_c",
            direction="below",
            raise_at=5.0,
            clear_at=5.5,
            severity="critical",
            message="frost risk: room at {value:.1f} °C",
            min_readings=2,
            clear_readings=2,
        ),
        DeltaRule(
            name="heater_failure",
            field="temp_c",
            while_field="heating",
            window_s=3600,
            direction="below",
            raise_at=0.2,
            clear_at=0.5,
            severity="warning",
            message="heating for an hour and the room changed {delta:+.1f} °C",
            clear_readings=2,  # one warm reading (sun on the sensor) does not end it
        ),
        silent(),
    ),
    example={
        "ts": 1795334400.0,
        "seq": 7,
        "temp_c": 20.4,
        "setpoint_c": 21.0,
        "humidity_pct": 44.0,
        "heating": True,
    },
)
