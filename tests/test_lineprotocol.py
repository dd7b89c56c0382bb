"""Line protocol: escaping that no device text can break, and the storage schema."""

from __future__ import annotations

import pytest

from devices.catalogue import DEVICE_TYPES
from devices.topics import DeviceAddress
from ingest.decode import Rejection, RejectReason, ValidReading
from storage.lineprotocol import (
    count_reading_lines,
    escape_tag,
    format_field,
    is_reading_line,
    line_field_string,
    reading_line,
    rejection_line,
)


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [("a b", r"a\ b"), ("a,b", r"a\,b"), ("a=b", r"a\=b"), ("a\nb", r"a\x0ab"), ("ok", "ok")],
    ids=["space", "comma", "equals", "newline", "plain"],
)
def test_tag_escaping(raw: str, escaped: str) -> None:
    assert escape_tag(raw) == escaped


@pytest.mark.parametrize(
    ("raw", "quoted"),
    [
        ('say "hi"', r'"say \"hi\""'),
        ("back\\slash", r'"back\\slash"'),
        ("two\nlines\r", r'"two\x0alines\x0d"'),
    ],
    ids=["quote", "backslash", "line-breaks"],
)
def test_string_fields_never_contain_a_line_break_or_an_open_quote(raw: str, quoted: str) -> None:
    assert line_field_string(raw) == quoted


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "true"), (False, "false"), (7, "7i"), (38.0, "38.0"), (1e-7, "1e-07")],
)
def test_field_types_are_kept(value: object, text: str) -> None:
    assert format_field(value) == text


def test_reading_line_schema() -> None:
    reading = DEVICE_TYPES["thermostat"].reading.model_validate(
        {
            "ts": 1795327200,
            "seq": 3,
            "temp_c": 20,
            "setpoint_c": 21.5,
            "humidity_pct": 40,
            "heating": False,
        }
    )
    line = reading_line(ValidReading(DeviceAddress("home-1", "thermostat", "th-1"), reading))
    assert line == (
        "thermostat,device_id=th-1,tenant=home-1 temp_c=20.0,setpoint_c=21.5,"
        "humidity_pct=40.0,heating=false,seq=3i 1795327200000000000"
    )


def test_rejection_line_keeps_hostile_text_in_fields() -> None:
    rejection = Rejection(
        RejectReason.BAD_JSON,
        "farm",
        "cow_tracker",
        "moclo/farm/cow_tracker/c 1,x=1/telemetry",
        'bad "json"\n',
        b'{"a":\n"b\\"}',
        5,
    )
    line = rejection_line(rejection, 99)
    assert "\n" not in line
    assert line.startswith("moclo_rejected,device_type=cow_tracker,reason=bad_json,tenant=farm ")
    assert line.endswith(" 99")


def _field_by_field(item: ValidReading) -> str:
    """The line as the schema defines it, each field through `format_field`."""
    reading, address = item.reading, item.address
    names = reading.measurement_fields
    fields = ",".join(f"{n}={format_field(getattr(reading, n))}" for n in names)
    return (
        f"{address.device_type},device_id={address.device_id},tenant={address.tenant} "
        f"{fields},seq={reading.seq}i {reading.ts}"
    )


@pytest.mark.parametrize("name", sorted(DEVICE_TYPES))
def test_each_types_compiled_line_is_the_field_by_field_line(name: str) -> None:
    device = DEVICE_TYPES[name]
    example = dict(device.example)
    variants = [example]
    # Every bool both ways; a float field given a whole number still writes a float.
    for field, value in example.items():
        if isinstance(value, bool):
            variants.append(example | {field: not value})
        elif isinstance(value, float) and field != "ts":
            variants.append(example | {field: int(value)})
    for payload in variants:
        item = ValidReading(
            DeviceAddress("farm", name, "dev-1"), device.reading.model_validate(payload)
        )
        assert reading_line(item) == _field_by_field(item)


def test_a_free_text_field_is_escaped_in_the_compiled_line() -> None:
    from typing import Literal

    from devices.base import Reading

    class Noted(Reading):
        note: str
        mood: Literal["ok", 'say "hi"']

    reading = Noted.model_validate({"ts": 1, "seq": 1, "note": 'a "b"\n', "mood": 'say "hi"'})
    item = ValidReading(DeviceAddress("t", "noted", "d"), reading)
    assert reading_line(item) == _field_by_field(item)
    assert r'note="a \"b\"\x0a",mood="say \"hi\""' in reading_line(item)


def test_count_reading_lines_counts_what_is_reading_line_says() -> None:
    """The batch's stored-readings count: our own measurements (moclo_*) are not readings."""
    lines = [
        "cow_tracker,device_id=c-1,tenant=farm activity=1i,seq=1i 1",
        'moclo_rejected,device_type=x,reason=bad_json,tenant=t topic="t" 2',
        'moclo_alerts,tenant=farm state="raised" 3',
        "thermostat,device_id=th-1,tenant=home temp_c=20.5,seq=2i 4",
        "moclo",  # a measurement that only starts like ours is a reading's
    ]
    assert count_reading_lines(lines) == sum(map(is_reading_line, lines)) == 3
    assert count_reading_lines([]) == 0
