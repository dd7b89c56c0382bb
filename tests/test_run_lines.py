"""The lines of a run of readings (an array's) write their floats by one orjson call instead of
`repr` each (storage/lineprotocol.py `reading_run_formatter`): the same lines but for how a float
is spelt, numbers that read back as the same doubles, and InfluxDB storing the same number
either way."""

from __future__ import annotations

import math
import random
import time

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from devices.catalogue import DEVICE_TYPES
from devices.fast import AnyReading, fast_struct
from devices.topics import DeviceAddress
from ingest.alerts import AlertEngine
from ingest.alerts.rulebook import RuleBook
from ingest.cardinality import CardinalityGuard
from ingest.decode import Decoder, RejectReason
from ingest.pipeline import Pipeline
from ingest.rejections import RejectionLog
from ingest.source import Message
from storage.lineprotocol import reading_formatter, reading_head, reading_run_formatter
from tests.helpers import Influx

COW = DEVICE_TYPES["cow_tracker"]
FLOATS = ("body_temp_c", "lat", "lon", "battery_pct")  # the cow reading's float fields
TS_S = 1_795_327_200
FINITE = st.floats(allow_nan=False, allow_infinity=False)


def cows(values: list[tuple[float, ...]], *, struct: bool = True) -> list[AnyReading]:
    """Cow readings holding `values` in their float fields, built without validation (so any
    float fits), as the fast path's Struct or as the pydantic model."""
    kind = fast_struct(COW.reading) if struct else None
    out: list[AnyReading] = []
    for i, floats in enumerate(values):
        # The Struct makes its epoch seconds nanoseconds as it is built; model_construct keeps
        # what it is given.
        ts = TS_S + i if kind else (TS_S + i) * 1_000_000_000
        fields = {"ts": ts, "seq": i, "activity": 1, "rumination_min": 2}
        fields |= dict(zip(FLOATS, floats, strict=True))
        out.append(kind(**fields) if kind else COW.reading.model_construct(**fields))
    return out


def fields_of(line: str) -> dict[str, str]:
    _, fields, _ = line.split(" ")
    return dict(field.split("=") for field in fields.split(","))


def one_by_one(head: str, readings: list[AnyReading]) -> list[str]:
    return [reading_formatter(type(r))(head, r) for r in readings]


HEAD = reading_head(DeviceAddress("farm", "cow_tracker", "cow-1"))


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(FINITE, FINITE, FINITE, FINITE), min_size=1, max_size=60), st.booleans())
def test_a_runs_floats_read_back_as_the_same_doubles(
    values: list[tuple[float, ...]], struct: bool
) -> None:
    readings = cows(values, struct=struct)
    lines = reading_run_formatter(type(readings[0]))(HEAD, readings)
    expected = one_by_one(HEAD, readings)
    assert len(lines) == len(expected)
    for line, old, floats in zip(lines, expected, values, strict=True):
        new_fields, old_fields = fields_of(line), fields_of(old)
        assert line.split(" ")[::2] == old.split(" ")[::2]  # the head and the time
        assert new_fields.keys() == old_fields.keys()
        for name, value in zip(FLOATS, floats, strict=True):
            written = float(new_fields[name])
            assert written == value and math.copysign(1, written) == math.copysign(1, value)
        for name in new_fields.keys() - set(FLOATS):
            assert new_fields[name] == old_fields[name]


@pytest.mark.parametrize(
    "odd",
    [math.nan, math.inf, -math.inf, 10**30],
    ids=["nan", "infinity", "minus-infinity", "int-beyond-64-bits"],
)
def test_a_value_orjson_cannot_write_leaves_the_run_to_repr(odd: float) -> None:
    """Validated readings hold none of these; should one come, its run is written as before
    (and InfluxDB refuses the NaN line for its content, as it did)."""
    readings = cows([(38.5, 52.0, 5.0, 80.0), (odd, 52.0, 5.0, 80.0)], struct=False)
    assert reading_run_formatter(type(readings[0]))(HEAD, readings) == one_by_one(HEAD, readings)


def test_a_number_beyond_a_double_is_refused_with_its_reason_never_written() -> None:
    """1e400 in a float field never reaches the formatter: no double holds it, so neither
    decoder takes the payload (as before this change: a JSON parser's refusal, `bad_json`,
    for the whole message, whose payload the rejection keeps); the control, the same array
    without it, is stored."""
    now = time.time_ns()
    good = orjson.dumps({**COW.example, "ts": now // 1_000_000_000, "seq": 1})
    pipeline = Pipeline(
        Decoder("p"),
        AlertEngine(RuleBook.empty()),
        RejectionLog(),
        CardinalityGuard(burst=10, per_minute=10),
    )
    topic = "p/farm/cow_tracker/cow-1/telemetry"
    bad = b"[" + good + b',{"ts":1,"seq":2,"body_temp_c":1e400}]'
    batch = pipeline.prepare([Message(topic, bad, 1, 1, now, 1)])
    assert batch.readings == 0
    assert [r.reason for r in batch.rejections] == [RejectReason.BAD_JSON]
    assert "infinity" in batch.rejections[0].error and batch.rejections[0].payload == bad
    control = pipeline.prepare([Message(topic, b"[" + good + b"]", 2, 1, now, 1)])
    assert (control.readings, control.rejections) == (1, [])


EDGES = [
    -0.0,
    0.0,
    1.0,  # a whole number stays a float field: "1.0", never "1"
    52.0,
    0.1 + 0.2,
    1e-7,  # "1e-7" here, "1e-07" by repr
    1.1791870367106107e-06,
    1e16,
    1.2345678901234568e17,
    5e-324,  # the smallest subnormal
    2.2250738585072014e-308,
    1.7976931348623157e308,  # the largest double
    -1.7976931348623157e308,
]


def test_influxdb_stores_the_same_number_from_either_spelling(influx: Influx) -> None:
    """The real InfluxDB, fed a run's lines (one device) and the same readings by `repr`
    (another), stores the same doubles for both: the edges above and seeded random ones."""
    rng = random.Random(18)
    values = [*EDGES]
    values += [rng.uniform(-1e3, 1e3) for _ in range(100)]
    values += [10 ** rng.uniform(-300, 300) * rng.choice((-1, 1)) for _ in range(100)]
    rows = [tuple(values[i : i + 4]) for i in range(0, len(values) - 3, 4)]
    readings = cows(rows)
    run = reading_run_formatter(type(readings[0]))(HEAD, readings)
    by_repr = one_by_one(reading_head(DeviceAddress("farm", "cow_tracker", "cow-2")), readings)
    assert any("e-7," in line for line in run) and any("e-07," in line for line in by_repr)
    influx.write([*run, *by_repr])
    stored: dict[str, list[tuple[float, ...]]] = {}
    for row in influx.query(f"SELECT {', '.join(FLOATS)} FROM cow_tracker GROUP BY device_id"):
        # InfluxDB's JSON spells a whole double as an integer (-1388825305764448800, 0 for
        # -0.0): float() of that text is the double it stored.
        stored.setdefault(row["device_id"], []).append(tuple(float(row[n]) for n in FLOATS))
    assert stored["cow-1"] == rows  # the run's spelling
    assert stored["cow-2"] == rows  # the control: repr's, as before


def test_a_run_of_one_reading_is_written_as_one_by_one() -> None:
    """A single reading's message (the single shape) skips orjson's call, which costs more
    than `repr` for one reading: its line is exactly the one-by-one line, 1e-07 included."""
    readings = cows([(1e-7, 52.0, 5.0, 80.0)])
    assert reading_run_formatter(type(readings[0]))(HEAD, readings) == one_by_one(HEAD, readings)
    assert "body_temp_c=1e-07," in one_by_one(HEAD, readings)[0]
