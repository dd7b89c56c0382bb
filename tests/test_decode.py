"""Decode and validate: every message ends as readings or reasoned rejections, never a crash."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.decode import (
    INVALID_TAG,
    REJECTED_PAYLOAD_KEEP_BYTES,
    UNKNOWN_TYPE_TAG,
    Decoded,
    Decoder,
    Limits,
    RejectReason,
)
from tests.decode_paths import both_paths
from tests.helpers import COW

PREFIX = "moclo"
TOPIC = "moclo/farm-1/cow_tracker/cow-7/telemetry"
GOOD = json.dumps(COW).encode()
ARRIVAL_NS = (1795327200 + 60) * 10**9  # a minute after COW's ts


def decode(topic: str, payload: bytes, **options: int) -> Decoded:
    out = Decoded()
    Decoder(PREFIX, limits=Limits(**options)).decode(topic, payload, ARRIVAL_NS, out)
    return out


def test_a_valid_reading_takes_its_identity_from_the_topic() -> None:
    out = decode(TOPIC, GOOD)
    assert out.rejections == []
    [item] = out.readings
    assert (item.address.tenant, item.address.device_type, item.address.device_id) == (
        "farm-1",
        "cow_tracker",
        "cow-7",
    )
    assert item.reading.ts == 1795327200_000000000


REJECTIONS = [
    (
        "moclo/farm-1/cow_tracker/cow-7/status",
        GOOD,
        RejectReason.BAD_TOPIC,
        "farm-1",
        "cow_tracker",
        "wrong-suffix",
    ),
    (
        "other/farm-1/cow_tracker/cow-7/telemetry",
        GOOD,
        RejectReason.BAD_TOPIC,
        INVALID_TAG,
        UNKNOWN_TYPE_TAG,
        "wrong-prefix",
    ),
    (
        "moclo/Farm_1/cow_tracker/cow-7/telemetry",
        GOOD,
        RejectReason.BAD_TOPIC,
        INVALID_TAG,
        "cow_tracker",
        "bad-tenant",
    ),
    (
        "moclo/farm-1/cow_tracker/-cow/telemetry",
        GOOD,
        RejectReason.BAD_TOPIC,
        "farm-1",
        "cow_tracker",
        "bad-device-id",
    ),
    (
        "moclo/farm-1/cow_tracker/" + "c" * 64 + "/telemetry",
        GOOD,
        RejectReason.BAD_TOPIC,
        "farm-1",
        "cow_tracker",
        "device-id-too-long",
    ),
    (
        "moclo/farm-1/toaster/t-1/telemetry",
        GOOD,
        RejectReason.UNKNOWN_DEVICE_TYPE,
        "farm-1",
        UNKNOWN_TYPE_TAG,
        "unknown-type",
    ),
    (TOPIC, b"{not json", RejectReason.BAD_JSON, "farm-1", "cow_tracker", "bad-json"),
    (TOPIC, b"\xff\xfe", RejectReason.BAD_JSON, "farm-1", "cow_tracker", "not-utf8"),
    (
        TOPIC,
        GOOD.replace(b"38.6", b"NaN"),
        RejectReason.BAD_JSON,
        "farm-1",
        "cow_tracker",
        "nan-literal",
    ),
    (TOPIC, b"42", RejectReason.BAD_SHAPE, "farm-1", "cow_tracker", "scalar"),
    (TOPIC, b"[]", RejectReason.BAD_SHAPE, "farm-1", "cow_tracker", "empty-array"),
    (
        TOPIC,
        b"[" + b",".join([GOOD] * 1001) + b"]",
        RejectReason.BAD_SHAPE,
        "farm-1",
        "cow_tracker",
        "array-over-1000",
    ),
    (
        TOPIC,
        json.dumps({**COW, "body_temp_c": "38.5"}).encode(),
        RejectReason.INVALID_READING,
        "farm-1",
        "cow_tracker",
        "schema",
    ),
    # Found by the property test below: a finite float whose nanoseconds overflow to infinity.
    (
        TOPIC,
        json.dumps({**COW, "ts": 2e302}).encode(),
        RejectReason.INVALID_READING,
        "farm-1",
        "cow_tracker",
        "huge-float-ts",
    ),
]


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "tenant", "device_type"),
    [case[:5] for case in REJECTIONS],
    ids=[case[5] for case in REJECTIONS],
)
def test_each_kind_of_bad_input_is_rejected_with_its_reason(
    topic: str, payload: bytes, reason: RejectReason, tenant: str, device_type: str
) -> None:
    out = decode(topic, payload)
    assert out.readings == []
    [rejection] = out.rejections
    assert rejection.reason is reason
    assert (rejection.tenant, rejection.device_type) == (tenant, device_type)
    assert rejection.topic == topic
    assert rejection.error
    assert rejection.payload == payload[:REJECTED_PAYLOAD_KEEP_BYTES]


def test_payload_over_the_size_limit_is_rejected_before_parsing() -> None:
    out = decode(TOPIC, GOOD + b" " * 100, max_payload_bytes=len(GOOD))
    assert [r.reason for r in out.rejections] == [RejectReason.PAYLOAD_TOO_LARGE]


def test_schema_errors_say_which_field_and_what_was_sent() -> None:
    out = decode(TOPIC, json.dumps({**COW, "body_temp_c": "38.5", "colour": "red"}).encode())
    error = out.rejections[0].error
    assert "body_temp_c: Input should be a valid number (got '38.5')" in error
    assert "colour: unknown field" in error


def test_an_array_keeps_its_valid_readings_and_rejects_only_the_bad_ones() -> None:
    items = [COW, {**COW, "seq": 2, "activity": -5}, {**COW, "seq": 3}, "oops"]
    out = decode(TOPIC, json.dumps(items).encode())
    assert [r.reading.seq for r in out.readings] == [1, 3]
    assert [r.reason for r in out.rejections] == [
        RejectReason.INVALID_READING,
        RejectReason.BAD_SHAPE,
    ]
    assert out.rejections[0].error.startswith("reading 1: activity")
    assert json.loads(out.rejections[0].payload)["seq"] == 2  # the element, not the whole array
    assert out.rejections[1].error.startswith("reading 3:")


def test_an_array_of_exactly_1000_readings_is_accepted() -> None:
    items = [{**COW, "seq": i, "ts": 1795327200 - i} for i in range(1000)]
    assert len(decode(TOPIC, json.dumps(items).encode()).readings) == 1000


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from([*COW, "x"]), children, max_size=9)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(
    topic=st.one_of(st.just(TOPIC), st.text(max_size=80)),
    payload=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())),
)
def test_the_only_outcomes_are_readings_or_rejections(topic: str, payload: bytes) -> None:
    out = decode(topic, payload)
    assert out.readings or out.rejections
    for rejection in out.rejections:
        assert isinstance(rejection.reason, RejectReason)
        assert rejection.error
        assert len(rejection.payload) <= REJECTED_PAYLOAD_KEEP_BYTES


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "ts": st.integers(0, 2**33),
                "seq": st.integers(-2, 2**40),
                "body_temp_c": st.floats(25, 50),
                "activity": st.integers(-1, 12_000),
                "rumination_min": st.integers(0, 70),
                "lat": st.floats(-100, 100),
                "lon": st.floats(-200, 200),
                "battery_pct": st.floats(-5, 105),
            }
        ),
        min_size=1,
        max_size=20,
    )
)
def test_every_element_of_an_array_is_accounted_for(items: list[dict[str, object]]) -> None:
    out = decode(TOPIC, json.dumps(items).encode())
    assert len(out.readings) + len(out.rejections) == len(items)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"device_id": "cow-8"}, RejectReason.IDENTITY_MISMATCH),
        ({"device_id": 7}, RejectReason.IDENTITY_MISMATCH),
        ({"ts": 1795327200 + 60 + 601}, RejectReason.TS_OUT_OF_WINDOW),
        ({"ts": 1795327200 - 91 * 86_400}, RejectReason.TS_OUT_OF_WINDOW),
    ],
    ids=["other-device", "non-string-id", "too-far-ahead", "too-old"],
)
def test_identity_and_time_window(changes: dict[str, object], reason: RejectReason) -> None:
    out = decode(TOPIC, json.dumps({**COW, **changes}).encode())
    assert [r.reason for r in out.rejections] == [reason]


def test_a_payload_may_name_its_own_device() -> None:
    out = decode(TOPIC, json.dumps({**COW, "device_id": "cow-7"}).encode())
    assert len(out.readings) == 1 and out.rejections == []


def test_the_time_window_is_configurable() -> None:
    old = json.dumps({**COW, "ts": 1795327200 - 400 * 86_400}).encode()
    assert decode(TOPIC, old, max_past_s=None).readings
    assert decode(TOPIC, old, max_past_s=10).rejections


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"a":' * 2000, RejectReason.TOO_DEEP),
        (GOOD.replace(b"38.6", b"1e999"), RejectReason.BAD_JSON),
        (GOOD.replace(b'"seq": 1', b'"seq": 1180591620717411303424'), RejectReason.INVALID_READING),
        (GOOD.replace(b'"seq": 1', b'"seq": 9223372036854775808'), RejectReason.INVALID_READING),
    ],
    ids=["deep-nesting", "overflowing-float", "huge-int-becomes-float", "int-above-int64"],
)
def test_number_and_depth_limits(payload: bytes, reason: RejectReason) -> None:
    assert [r.reason for r in decode(TOPIC, payload).rejections] == [reason]


FAST_OR_NOT = [
    ("one", GOOD),
    ("array", json.dumps([COW, COW | {"seq": 8}]).encode()),
    ("array-of-one", json.dumps([COW]).encode()),
    ("one-bad-element", json.dumps([COW, COW | {"activity": -1}]).encode()),
    ("empty-array", b"[]"),
    ("names-itself", json.dumps(COW | {"device_id": "cow-7"}).encode()),
    ("names-another", json.dumps(COW | {"device_id": "cow-8"}).encode()),
    ("nan-literal", GOOD.replace(b'"lat": ', b'"lat": NaN, "x": ')),
    ("lone-surrogate", GOOD[:-1] + b', "note": "\\ud800"}'),
    ("too-old", json.dumps(COW | {"ts": 1795327200 - 91 * 86_400}).encode()),
    ("huge-int", GOOD.replace(b'"seq": 7', b'"seq": 18446744073709551617')),
    ("float-for-int", GOOD.replace(b'"activity": ', b'"activity": 1.5, "x": ')),
    ("whole-float-for-int", GOOD.replace(b'"activity": 420', b'"activity": 420.0')),
    ("whole-float-in-an-array", json.dumps([COW, COW | {"seq": 8.0}]).encode()),
    ("leading-space", b" " + GOOD),
    ("bom", b"\xef\xbb\xbf" + GOOD),
    ("not-json", b"{nope"),
]


@pytest.mark.parametrize("payload", [p for _, p in FAST_OR_NOT], ids=[n for n, _ in FAST_OR_NOT])
def test_the_fast_path_decides_exactly_as_the_careful_one(payload: bytes) -> None:
    fast, careful = both_paths(PREFIX, TOPIC, payload, ARRIVAL_NS)
    assert fast == careful


@settings(max_examples=300, deadline=None)
@given(
    payload=st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.lists(
            st.fixed_dictionaries(
                {
                    "ts": st.one_of(st.integers(0, 2**33), st.floats(allow_nan=False)),
                    # Integer fields also as whole floats (120.0), which both paths accept.
                    "seq": st.one_of(st.integers(-2, 2**65), st.integers(-2, 2**65).map(float)),
                    "body_temp_c": st.one_of(st.floats(25, 50), st.integers(25, 50)),
                    "activity": st.one_of(
                        st.integers(-1, 12_000),
                        st.floats(0, 10),
                        st.integers(-1, 12_000).map(float),
                    ),
                    "rumination_min": st.one_of(st.integers(0, 70), st.integers(0, 70).map(float)),
                    "lat": st.floats(-100, 100),
                    "lon": st.floats(-200, 200),
                    "battery_pct": st.floats(-5, 105),
                }
            ),
            min_size=0,
            max_size=5,
        ).map(lambda items: json.dumps(items if len(items) != 1 else items[0]).encode()),
    )
)
def test_fast_and_careful_paths_agree_on_anything(payload: bytes) -> None:
    fast, careful = both_paths(PREFIX, TOPIC, payload, ARRIVAL_NS)
    assert fast == careful
