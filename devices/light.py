"""`light`: a switchable light or smart plug in the house (the car's automation turns it on)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from devices.base import Reading
from devices.commands import CommandSpec, DesiredSpec, Strict
from devices.rules import ThresholdRule, silent
from devices.types import DeviceType


class LightReading(Reading):
    on: Annotated[bool, Field(description="switched on")]
    power_w: Annotated[float, Field(ge=0, le=3680, description="power drawn, W")]


class SwitchArguments(Strict):
    state: Literal["on", "off"]


class LightDesired(Strict):
    on: bool | None = None


DEVICE = DeviceType(
    name="light",
    description="Switchable light or smart plug: on/off, power drawn",
    reading=LightReading,
    commands=(CommandSpec("switch", "Switch the light on or off", arguments=SwitchArguments),),
    desired=DesiredSpec(LightDesired),
    rules=(
        # A 10 A plug on 230 V: beyond 2300 W the plug or what is plugged in is at fault.
        ThresholdRule(
            name="overload",
            field="power_w",
            direction="above",
            raise_at=2300,
            clear_at=2000,
            severity="warning",
            message="drawing {value:.0f} W",
            min_readings=2,
            clear_readings=2,
        ),
        silent(),
    ),
    example={"ts": 1795334400, "seq": 3, "on": True, "power_w": 8.5},
)
