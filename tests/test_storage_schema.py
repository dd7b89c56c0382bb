"""The measurement schema is declared once (`storage/schema.py`): every writer's line carries
exactly the declared tags and fields, and docs/storage-schema.md's table says the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devices.catalogue import DEVICE_TYPES
from devices.topics import DeviceAddress
from ingest.decode import Rejection, RejectReason, ValidReading
from storage.alert_record import Alert
from storage.lineprotocol import reading_line, rejection_line, unregistered_line
from storage.schema import ALERTS, MEASUREMENTS, READINGS, REJECTED, UNREGISTERED, Measurement

DOC = Path(__file__).resolve().parent.parent / "docs" / "storage-schema.md"
ADDRESS = DeviceAddress("farm", "cow_tracker", "cow-1")


def _keys(line: str) -> tuple[str, set[str], set[str]]:
    """A line's measurement, tag keys and field keys (for lines whose strings hold no space)."""
    head, fields, _ = line.split(" ")
    measurement, *tags = head.split(",")
    return (
        measurement,
        {t.split("=")[0] for t in tags},
        {f.split("=")[0] for f in fields.split(",")},
    )


def _reading_line(device_type: str) -> str:
    reading = DEVICE_TYPES[device_type].reading.model_validate(DEVICE_TYPES[device_type].example)
    return reading_line(ValidReading(DeviceAddress("farm", device_type, "d-1"), reading))


@pytest.mark.parametrize("device_type", sorted(DEVICE_TYPES))
def test_a_reading_line_carries_the_declared_tags_and_fields(device_type: str) -> None:
    measurement, tags, fields = _keys(_reading_line(device_type))
    assert measurement == device_type
    assert tags == set(READINGS.tags)
    assert fields == {*DEVICE_TYPES[device_type].reading.measurement_fields, *READINGS.fields}


def _rejection() -> str:
    rejection = Rejection(
        RejectReason.BAD_JSON, "farm", "cow_tracker", "t/farm/cow_tracker/cow-1", "e", b"x", 1
    )
    return rejection_line(rejection, 1)


def _alert() -> str:
    return Alert(
        alert_id="a", state="acknowledged", rule="r", kind="threshold", severity="info",
        tenant="t", device_type="d", device_id="i", value=1.0, message="m", ts_ns=1,
        first_seen_ns=1, last_seen_ns=1, acknowledged_by="b", note="n",
    ).to_line()  # fmt: skip


@pytest.mark.parametrize(
    ("declared", "line"),
    [
        (REJECTED, _rejection()),
        (UNREGISTERED, unregistered_line(ADDRESS, "t/farm/cow_tracker/cow-1", 1)),
        (ALERTS, _alert()),
    ],
    ids=["rejected", "unregistered", "alerts"],
)
def test_moclos_own_lines_carry_the_declared_tags_and_fields(
    declared: Measurement, line: str
) -> None:
    assert _keys(line) == (declared.name, set(declared.tags), set(declared.fields))


def _doc_table() -> dict[str, tuple[set[str], set[str]]]:
    """The doc's first table: measurement → (tags, fields), the names in backticks."""
    text = DOC.read_text()
    table = text[text.index("| measurement |") :].split("\n\n")[0].splitlines()[2:]
    names = re.compile(r"`([a-z_]+)`")
    rows = {}
    for row in table:
        measurement, tags, fields, _ = row.strip("|").split("|")
        key = READINGS.name if "device type" in measurement else names.findall(measurement)[0]
        rows[key] = (set(names.findall(tags)), set(names.findall(fields)))
    return rows


def test_the_docs_table_says_what_the_schema_declares() -> None:
    declared = {m.name: (set(m.tags), set(m.fields)) for m in MEASUREMENTS}
    assert _doc_table() == declared
    assert "storage/schema.py" in DOC.read_text()
