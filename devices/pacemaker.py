"""`pacemaker`: a Wi-Fi pacemaker watched from the cloud; it warns the cardiologist on the move."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from devices.base import Reading
from devices.commands import CommandSpec, DesiredSpec, Strict
from devices.rules import ThresholdRule, silent
from devices.types import DeviceType

ArrhythmiaEvent = Literal["none", "bradycardia", "tachycardia", "atrial_fibrillation", "lead_noise"]


class PacemakerReading(Reading):
    heart_rate_bpm: Annotated[int, Field(ge=20, le=250, description="heart rate, beats/min")]
    paced_pct: Annotated[
        float, Field(ge=0, le=100, description="beats paced by the device in the last period, %")
    ]
    battery_v: Annotated[float, Field(ge=2.0, le=3.3, description="battery voltage, V")]
    lead_impedance_ohm: Annotated[
        int, Field(ge=100, le=5000, description="pacing lead impedance, ohm (normal 200..1500)")
    ]
    event: Annotated[ArrhythmiaEvent, Field(description="arrhythmia event code")]


# The programmed lower rate: below it the pacemaker paces. 40..90 bpm is the range a remote
# change may set; anything else needs the patient in the clinic.
LowerRate = Annotated[int, Field(ge=40, le=90, description="lower rate limit, beats/min")]


class LowerRateArguments(Strict):
    lower_rate_bpm: LowerRate


class ReadOut(Strict):
    """A full interrogation, as the pacemaker answers `read_out`."""

    lower_rate_bpm: LowerRate
    heart_rate_bpm: Annotated[int, Field(ge=20, le=250)]
    paced_pct: Annotated[float, Field(ge=0, le=100)]
    battery_v: Annotated[float, Field(ge=2.0, le=3.3)]
    lead_impedance_ohm: Annotated[int, Field(ge=100, le=5000)]
    events_since_last: Annotated[dict[str, int], Field(description="arrhythmia events by code")]


class PacemakerDesired(Strict):
    lower_rate_bpm: LowerRate | None = None


# Every pacemaker command reads or changes a patient's therapy: clinicians of the patient's
# tenant only, recorded with who and when.
COMMANDS = (
    CommandSpec(
        "read_out",
        "Interrogate the device: settings, battery, lead, events",
        clearance="clinician",
        expiry_s=900,
        output=ReadOut,
    ),
    CommandSpec(
        "set_lower_rate",
        "Change the lower rate limit (40-90 bpm)",
        arguments=LowerRateArguments,
        clearance="clinician",
        expiry_s=600,
    ),
)

DEVICE = DeviceType(
    name="pacemaker",
    description="Wi-Fi pacemaker: heart rate, paced %, battery, lead impedance, arrhythmia events",
    reading=PacemakerReading,
    commands=COMMANDS,
    desired=DesiredSpec(PacemakerDesired, clearance="clinician"),
    rules=(
        ThresholdRule(
            name="bradycardia",
            field="heart_rate_bpm",
            direction="below",
            raise_at=40,
            clear_at=45,
            severity="critical",
            clear_readings=3,
            message="bradycardia: heart rate {value:.0f} bpm",
        ),
        ThresholdRule(
            name="tachycardia",
            field="heart_rate_bpm",
            direction="above",
            raise_at=150,
            clear_at=130,
            severity="critical",
            clear_readings=3,
            message="tachycardia: heart rate {value:.0f} bpm",
        ),
        ThresholdRule(
            name="lead_impedance_high",
            field="lead_impedance_ohm",
            direction="above",
            raise_at=2000,
            clear_at=1500,
            severity="critical",
            clear_readings=3,
            message="lead problem: impedance {value:.0f} ohm",
        ),
        ThresholdRule(
            name="battery_low",
            field="battery_v",
            direction="below",
            raise_at=2.6,
            clear_at=2.7,
            severity="warning",
            message="battery at {value:.2f} V: plan a replacement",
            clear_readings=3,
        ),
        # A pacemaker that stops reporting is itself news for the cardiologist.
        silent(after_intervals=5, at_least_s=900, severity="critical"),
    ),
    example={
        "ts": "2026-11-22T08:15:00+01:00",
        "seq": 512,
        "heart_rate_bpm": 68,
        "paced_pct": 12.5,
        "battery_v": 2.93,
        "lead_impedance_ohm": 540,
        "event": "none",
    },
)
