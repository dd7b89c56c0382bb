"""`blood_pressure`: a home blood-pressure meter, measured mornings and evenings."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from devices.base import Reading
from devices.rules import ThresholdRule, silent
from devices.types import DeviceType


class BloodPressureReading(Reading):
    systolic_mmhg: Annotated[int, Field(ge=50, le=260, description="systolic pressure, mmHg")]
    diastolic_mmhg: Annotated[int, Field(ge=30, le=160, description="diastolic pressure, mmHg")]
    pulse_bpm: Annotated[int, Field(ge=30, le=220, description="pulse, beats/min")]

    @model_validator(mode="after")
    def _systolic_above_diastolic(self) -> BloodPressureReading:
        if self.systolic_mmhg <= self.diastolic_mmhg:
            raise ValueError("systolic_mmhg must be above diastolic_mmhg")
        return self


DEVICE = DeviceType(
    name="blood_pressure",
    description="Home blood-pressure meter: systolic, diastolic, pulse",
    reading=BloodPressureReading,
    rules=(
        ThresholdRule(
            name="hypertensive_crisis",
            field="systolic_mmhg",
            direction="above",
            raise_at=180,
            clear_at=160,
            severity="critical",
            message="systolic {value:.0f} mmHg",
        ),
        # Measured twice a day: silent after a day and a half without one.
        silent(after_intervals=3, at_least_s=36 * 3600),
    ),
    example={
        "ts": "2026-11-22T07:05:00+01:00",
        "seq": 301,
        "systolic_mmhg": 128,
        "diastolic_mmhg": 82,
        "pulse_bpm": 66,
    },
)
