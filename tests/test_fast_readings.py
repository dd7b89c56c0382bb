"""The msgspec Structs generated from the pydantic catalogue (devices/fast.py) decide as pydantic
does: on every input, the decoder as ingest runs it (msgspec first, pydantic for anything msgspec
refuses) keeps the same lines and the same rejections, word for word, as pydantic alone."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ConfigDict, Field

from devices.base import Reading, parse_timestamp
from devices.catalogue import DEVICE_TYPES
from devices.fast import FastReading, fast_struct
from devices.types import DeviceType
from ingest.decode import Decoded, Decoder, RejectReason
from tests.decode_paths import both_paths

PREFIX = "moclo"
ARRIVAL_S = 1_795_327_260
ARRIVAL_NS = ARRIVAL_S * 10**9
TYPES = sorted(DEVICE_TYPES)

# JSON text that json.dumps cannot write, or writes one way only: each is a case where a
# decoder may differ from pydantic (whole floats for integers, overflow, non-finite literals).
RAW_TOKENS = [
    b"120.0",
    b"1e400",
    b"-1e400",
    b"NaN",
    b"Infinity",
    b"-0",
    b"1E2",
    b"0.0",
    b"-0.0",
    b"18446744073709551616",
    b"9223372036854775807",
    b'"38.5"',
    b"null",
    b"true",
    b"[]",
    b"{}",
    b'"\\ud800"',
]


def _value(kind: Any, low: float | None, high: float | None) -> st.SearchStrategy[bytes]:
    """JSON text for one field: mostly near its bounds, sometimes of another type entirely."""
    span = [v for v in (low, high) if v is not None]
    lo, hi = (min(span) - 5, max(span) + 5) if span else (-1e6, 1e6)
    near: st.SearchStrategy[Any]
    if kind is int:
        near = st.integers(int(lo), int(hi)) | st.integers(int(lo), int(hi)).map(float)
    elif kind is float:
        near = st.floats(lo, hi) | st.integers(int(lo), int(hi))
    elif kind is bool:
        near = st.booleans() | st.integers(0, 1)
    elif typing.get_origin(kind) is typing.Literal:
        near = st.sampled_from(typing.get_args(kind)) | st.text(max_size=12)
    else:
        near = st.text(max_size=12)
    dumped = near.map(lambda v: json.dumps(v).encode())
    return st.one_of(dumped, dumped, dumped, st.sampled_from(RAW_TOKENS))


def _timestamp() -> st.SearchStrategy[bytes]:
    """A `ts` in each wire form, inside the time window and out of it, and some that are not one."""
    seconds = st.integers(ARRIVAL_S - 91 * 86_400, ARRIVAL_S + 700)
    moments = st.builds(
        lambda s, us, minutes: (
            datetime.fromtimestamp(s, UTC)
            .replace(microsecond=us)
            .astimezone(timezone(timedelta(minutes=minutes)))
        ),
        seconds,
        st.integers(0, 999_999),
        st.integers(-14 * 60, 14 * 60),
    )
    texts = st.one_of(
        moments.map(lambda m: m.isoformat()),
        moments.map(lambda m: m.isoformat().replace("+00:00", "Z")),
        moments.map(lambda m: m.strftime("%Y-%m-%dT%H:%M:%S")),  # no offset: refused
        st.text(max_size=30),
    )
    floats = st.floats(ARRIVAL_S - 91 * 86_400, ARRIVAL_S + 700)
    return st.one_of(
        seconds.map(lambda v: json.dumps(v).encode()),
        floats.map(lambda v: json.dumps(v).encode()),
        texts.map(lambda v: json.dumps(v).encode()),
        st.sampled_from([b"true", b"null", b"1e400", b"99999999999999999999", b"-0.0"]),
    )


def _bounds(metadata: list[Any]) -> tuple[float | None, float | None]:
    low = next((getattr(m, "ge", None) for m in metadata if hasattr(m, "ge")), None)
    high = next((getattr(m, "le", None) for m in metadata if hasattr(m, "le")), None)
    return low, high


@st.composite
def _reading(draw: st.DrawFn, model: type[Reading]) -> bytes:
    """One reading as JSON text: each field maybe missing, an unknown field or a device_id
    maybe added, a key maybe given twice."""
    parts: list[bytes] = []
    for name, info in model.model_fields.items():
        if draw(st.integers(0, 30)) == 0:
            continue  # missing
        value = _timestamp() if name == "ts" else _value(info.annotation, *_bounds(info.metadata))
        parts.append(json.dumps(name).encode() + b":" + draw(value))
    extra = draw(
        st.sampled_from(
            [None, None, None, b'"x":1', b'"device_id":"d-1"', b'"device_id":"other"', b'"seq":3']
        )
    )
    if extra is not None:
        parts.insert(draw(st.integers(0, len(parts))), extra)
    return b"{" + b",".join(parts) + b"}"


@st.composite
def _payload(draw: st.DrawFn, model: type[Reading]) -> bytes:
    """A single reading, or an array of them (now and then empty)."""
    if draw(st.booleans()):
        return draw(_reading(model))
    return b"[" + b",".join(draw(st.lists(_reading(model), max_size=4))) + b"]"


@pytest.mark.parametrize("name", TYPES)
def test_every_catalogue_type_has_a_struct_that_takes_its_example(name: str) -> None:
    """The positive control: the fast path is really taken, so the agreement below means
    something. Each type's documented example decodes into its Struct, as into its model."""
    device = DEVICE_TYPES[name]
    struct = fast_struct(device.reading)
    assert struct is not None
    example = json.dumps(device.example).encode()
    fast = msgspec.json.decode(example, type=struct)
    careful = device.reading.model_validate_json(example)
    assert isinstance(fast, FastReading)
    for field in ("ts", "seq", *device.reading.measurement_fields):
        assert getattr(fast, field) == getattr(careful, field)
        assert type(getattr(fast, field)) is type(getattr(careful, field))


@pytest.mark.parametrize("name", TYPES)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_both_paths_agree_on_every_input(name: str, data: st.DataObject) -> None:
    device: DeviceType = DEVICE_TYPES[name]
    payload = data.draw(_payload(device.reading), label="payload")
    topic = f"{PREFIX}/farm-1/{name}/d-1/telemetry"
    fast, careful = both_paths(PREFIX, topic, payload, ARRIVAL_NS)
    assert fast == careful


def test_a_refusal_keeps_pydantics_reason_word_for_word() -> None:
    """Systolic at or below diastolic: the Struct refuses it (the model validator runs on the
    Struct too), and the reason stored is the model's own sentence."""
    reading = DEVICE_TYPES["blood_pressure"].example | {"systolic_mmhg": 80, "diastolic_mmhg": 90}
    struct = fast_struct(DEVICE_TYPES["blood_pressure"].reading)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(reading).encode(), type=struct)
    out = Decoded()
    topic = f"{PREFIX}/farm-1/blood_pressure/bp-1/telemetry"
    Decoder(PREFIX).decode(topic, json.dumps(reading).encode(), ARRIVAL_NS, out)
    [rejection] = out.rejections
    assert rejection.reason is RejectReason.INVALID_READING
    assert "systolic_mmhg must be above diastolic_mmhg" in rejection.error


class _PatternReading(Reading):
    code: Annotated[str, Field(pattern=r"^[a-z]+$")]


class _LaxReading(Reading):
    model_config = ConfigDict(strict=False)
    level: float


class _OptionalReading(Reading):
    level: float = 0.0


@pytest.mark.parametrize(
    "model", [_PatternReading, _LaxReading, _OptionalReading], ids=["pattern", "lax", "optional"]
)
def test_a_model_the_generator_cannot_express_stays_on_pydantic(model: type[Reading]) -> None:
    """No exact msgspec twin here (a pattern, lax numbers, a default): no Struct, rather than one
    that decides otherwise; the controls above show the catalogue's models do get one."""
    assert fast_struct(model) is None


@pytest.mark.parametrize(
    "ts",
    [
        b"0",
        b"-0.0",
        b"1795327260.123",
        b"-1795327260.0000005",
        b"8999999999.999999",
        b"9000000000",
        b"-9000000000.5",
        b"9223372036",
        b"9223372037",
        b"-9223372037",
        b"9223372036.854775",
        b"1e11",
        b"123456789012345678901234567890",
        b'"2026-11-22T10:00:00.5+01:00"',
    ],
)
def test_a_structs_ts_is_what_the_models_parser_makes_of_it(ts: bytes) -> None:
    """Epoch seconds inside InfluxDB's range skip parse_timestamp in the Struct; near and
    beyond the edges of that shortcut the result, or the refusal, is still the parser's."""
    struct = fast_struct(DEVICE_TYPES["light"].reading)
    assert struct is not None
    payload = json.dumps(DEVICE_TYPES["light"].example | {"ts": 0}).encode()
    payload = payload.replace(b'"ts": 0', b'"ts": ' + ts)
    try:
        expected: int | None = parse_timestamp(json.loads(ts))
    except ValueError:
        expected = None
    try:
        got: int | None = msgspec.json.decode(payload, type=struct).ts
    except msgspec.ValidationError:
        got = None
    assert got == expected
