"""`smart_meter`: a home electricity meter; the energy counter only ever goes up."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from devices.base import Reading
from devices.commands import CommandSpec, DesiredSpec, Strict
from devices.rules import DeltaRule, ThresholdRule, silent
from devices.topics import IDENTIFIER_RULE
from devices.types import DeviceType


class SmartMeterReading(Reading):
    power_w: Annotated[float, Field(ge=0, le=50_000, description="instantaneous power, W")]
    energy_kwh: Annotated[
        float, Field(ge=0, le=1e9, description="cumulative energy, kWh (never decreases)")
    ]
    voltage_v: Annotated[float, Field(ge=150, le=300, description="mains voltage, V")]


ApplianceMode = Literal["on", "off", "standby"]
Appliance = Annotated[str, Field(pattern=IDENTIFIER_RULE, description="appliance name")]


class SwitchArguments(Strict):
    appliance: Appliance
    mode: ApplianceMode


class SmartMeterDesired(Strict):
    # The modes of the appliances named; one not named keeps its mode.
    appliances: Annotated[dict[Appliance, ApplianceMode], Field(max_length=32)] | None = None


COMMANDS = (
    CommandSpec("switch", "Switch one appliance on, off or to standby", arguments=SwitchArguments),
)

DEVICE = DeviceType(
    name="smart_meter",
    description="Home electricity meter: power, cumulative energy, voltage",
    reading=SmartMeterReading,
    commands=COMMANDS,
    desired=DesiredSpec(SmartMeterDesired),
    rules=(
        # EN 50160: 230 V ± 10 %.
        ThresholdRule(
            name="undervoltage",
            field="voltage_v",
            direction="below",
            raise_at=207,
            clear_at=212,
            severity="warning",
            message="mains at {value:.0f} V",
            min_readings=3,
            clear_readings=3,
        ),
        ThresholdRule(
            name="overvoltage",
            field="voltage_v",
            direction="above",
            raise_at=253,
            clear_at=248,
            severity="warning",
            message="mains at {value:.0f} V",
            min_readings=3,
            clear_readings=3,
        ),
        # The counter only ever goes up: going back means a reset or tampering.
        DeltaRule(
            name="counter_backwards",
            field="energy_kwh",
            direction="below",
            raise_at=-0.001,
            clear_at=0.0,
            severity="critical",
            message="energy counter went back {delta:.3f} kWh: reset or tampering?",
            clear_for_s=3600,
        ),
        silent(),
    ),
    example={
        "ts": 1795334400,
        "seq": 88,
        "power_w": 412.0,
        "energy_kwh": 18234.51,
        "voltage_v": 231.4,
    },
)
