"""The wire contract of readings: what each device type accepts and what it refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from devices.base import parse_timestamp
from devices.catalogue import DEVICE_TYPES, get_device_type
from tests.helpers import COW as HEALTHY_COW
from tests.helpers import moclo

COW = {**HEALTHY_COW, "ts": "2026-11-22T06:00:00Z"}
THERMOSTAT = {
    "ts": 1795334400,
    "seq": 0,
    "temp_c": 20.4,
    "setpoint_c": 21.0,
    "humidity_pct": 44.0,
    "heating": True,
}


def test_catalogue_has_the_two_foundation_types() -> None:
    assert set(DEVICE_TYPES) >= {"cow_tracker", "thermostat"}
    assert DEVICE_TYPES["cow_tracker"].reading.measurement_fields == (
        "body_temp_c",
        "activity",
        "rumination_min",
        "lat",
        "lon",
        "battery_pct",
    )
    assert DEVICE_TYPES["thermostat"].reading.measurement_fields == (
        "temp_c",
        "setpoint_c",
        "humidity_pct",
        "heating",
    )


@pytest.mark.parametrize("name", sorted(DEVICE_TYPES))
def test_each_documented_example_is_a_valid_reading(name: str) -> None:
    device = DEVICE_TYPES[name]
    device.reading.model_validate_json(json.dumps(device.example))


@pytest.mark.parametrize(
    ("ts", "expected_ns"),
    [
        ("2026-11-22T06:00:00Z", 1795327200_000000000),
        ("2026-11-22T07:00:00+01:00", 1795327200_000000000),
        ("2026-11-22t06:00:00.123456789z", 1795327200_123456789),
        ("2026-11-22 05:00:00.5-01:00", 1795327200_500000000),
        (1795327200, 1795327200_000000000),
        (1795327200.25, 1795327200_250000000),
    ],
    ids=[
        "zulu",
        "offset",
        "nanoseconds-lowercase",
        "space-negative-offset",
        "epoch-int",
        "epoch-float",
    ],
)
def test_both_timestamp_forms_are_accepted(ts: Any, expected_ns: int) -> None:
    assert parse_timestamp(ts) == expected_ns


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    reading = {**base, **changes}
    return {k: v for k, v in reading.items() if v is not ...}


INVALID = [
    ("cow_tracker", _with(COW, body_temp_c="38.5"), "body_temp_c", "string-for-number"),
    ("cow_tracker", _with(COW, body_temp_c=45.1), "body_temp_c", "above-range"),
    ("cow_tracker", _with(COW, body_temp_c=29.9), "body_temp_c", "below-range"),
    ("cow_tracker", _with(COW, activity=10_001), "activity", "activity-range"),
    ("cow_tracker", _with(COW, activity=12.5), "activity", "float-for-int"),
    ("cow_tracker", _with(COW, rumination_min=61), "rumination_min", "rumination-range"),
    ("cow_tracker", _with(COW, lat=90.5), "lat", "lat-range"),
    ("cow_tracker", _with(COW, lon=-181), "lon", "lon-range"),
    ("cow_tracker", _with(COW, battery_pct=-1), "battery_pct", "battery-range"),
    ("cow_tracker", _with(COW, battery_pct=True), "battery_pct", "bool-for-number"),
    ("cow_tracker", _with(COW, device_id="cow-2"), "device_id", "unknown-field"),
    ("cow_tracker", _with(COW, lat=...), "lat", "missing-field"),
    ("cow_tracker", _with(COW, seq=-1), "seq", "negative-seq"),
    ("cow_tracker", _with(COW, seq="1"), "seq", "string-seq"),
    ("cow_tracker", _with(COW, ts="2026-11-22T06:00:00"), "ts", "naive-ts"),
    ("cow_tracker", _with(COW, ts="2026-11-22"), "ts", "date-only-ts"),
    ("cow_tracker", _with(COW, ts="2026-02-30T06:00:00Z"), "ts", "impossible-date"),
    ("cow_tracker", _with(COW, ts=True), "ts", "bool-ts"),
    ("cow_tracker", _with(COW, ts=1e20), "ts", "ts-beyond-influx-range"),
    ("cow_tracker", _with(COW, ts=None), "ts", "null-ts"),
    ("thermostat", _with(THERMOSTAT, heating=1), "heating", "int-for-bool"),
    ("thermostat", _with(THERMOSTAT, heating="true"), "heating", "string-for-bool"),
    ("thermostat", _with(THERMOSTAT, temp_c=-40.5), "temp_c", "temp-range"),
    ("thermostat", _with(THERMOSTAT, setpoint_c=4), "setpoint_c", "setpoint-range"),
    ("thermostat", _with(THERMOSTAT, humidity_pct=100.1), "humidity_pct", "humidity-range"),
]


@pytest.mark.parametrize(
    ("device_type", "reading", "field"),
    [case[:3] for case in INVALID],
    ids=[case[3] for case in INVALID],
)
def test_invalid_readings_are_refused_naming_the_field(
    device_type: str, reading: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        get_device_type(device_type).reading.model_validate_json(json.dumps(reading))
    assert field in {str(error["loc"][0]) for error in caught.value.errors()}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_floats_are_refused(literal: str) -> None:
    text = json.dumps(COW).replace("38.6", literal)
    with pytest.raises(ValidationError):
        get_device_type("cow_tracker").reading.model_validate_json(text)


def test_unknown_type_lookup_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="cow_tracker"):
        get_device_type("toaster")


def test_cli_lists_device_types() -> None:
    result = moclo("devices", "types", "--json")
    assert result.returncode == 0, result.stderr
    assert {d["type"] for d in json.loads(result.stdout)} == set(DEVICE_TYPES)


def test_cli_prints_a_json_schema_that_matches_the_model() -> None:
    result = moclo("devices", "schema", "cow_tracker")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["title"] == "cow_tracker"
    assert schema["additionalProperties"] is False
    assert schema["properties"]["body_temp_c"]["minimum"] == 30
    assert schema["properties"]["body_temp_c"]["maximum"] == 45
    assert set(schema["required"]) == {
        "ts",
        "seq",
        *DEVICE_TYPES["cow_tracker"].reading.measurement_fields,
    }


def test_cli_schema_of_unknown_type_says_which_exist() -> None:
    result = moclo("devices", "schema", "toaster")
    assert result.returncode == 2
    assert "cow_tracker" in result.stderr
