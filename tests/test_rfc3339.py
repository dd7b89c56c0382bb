"""devices/rfc3339.py: each form keeps the precision its readers expect."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.rfc3339 import (
    _canonical_ns,
    _parse_ns_by_regex,
    format_log_ms,
    format_seconds_spaced,
    format_shortest,
    format_us,
    now_compact,
    now_seconds,
    parse_ns,
)

T0_NS = 1795327200_000000000  # 2026-11-22T06:00:00Z


def test_timestamps_format_back_as_rfc3339() -> None:
    assert format_us(1795327200_250000000) == "2026-11-22T06:00:00.250000Z"


@pytest.mark.parametrize(
    ("format_", "ns", "text"),
    [
        (format_us, T0_NS, "2026-11-22T06:00:00Z"),
        (format_us, T0_NS + 123_456_789, "2026-11-22T06:00:00.123456Z"),
        (format_shortest, T0_NS, "2026-11-22T06:00:00Z"),
        (format_shortest, T0_NS + 250_000_000, "2026-11-22T06:00:00.250Z"),
        (format_shortest, T0_NS + 250_000, "2026-11-22T06:00:00.000250Z"),
        (format_shortest, T0_NS + 1, "2026-11-22T06:00:00.000000001Z"),
        (format_seconds_spaced, T0_NS + 400_000_000, "2026-11-22 06:00:00Z"),
    ],
    ids=["us-whole", "us-truncated", "shortest-whole", "ms", "us", "ns", "spaced"],
)
def test_each_form_keeps_its_precision(format_: Callable[[int], str], ns: int, text: str) -> None:
    assert format_(ns) == text
    if format_ is not format_seconds_spaced:
        assert parse_ns(text) == ns - ns % (1_000 if format_ is format_us else 1)


def test_a_log_stamp_is_utc_to_the_millisecond() -> None:
    assert format_log_ms(1795327200.25, 250.0) == "2026-11-22T06:00:00.250Z"


@pytest.mark.parametrize(
    ("stamp", "pattern"),
    [
        (now_seconds(), r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"),
        (now_seconds(zulu=False), r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"),
        (now_compact(), r"\d{8}T\d{6}Z"),
    ],
    ids=["seconds", "seconds-offset", "compact"],
)
def test_the_present_in_each_stamp_form(stamp: str, pattern: str) -> None:
    assert re.fullmatch(pattern, stamp), stamp


# parse_ns reads the shapes devices send by slicing (`_canonical_ns`) and anything else with
# the general parser; both must give the same number, or the same refusal, for every string.
_OUTCOME = int | str


def _outcome(parse: Callable[[str], int], text: str) -> _OUTCOME:
    try:
        return parse(text)
    except ValueError as exc:
        return f"ValueError: {exc}"


@st.composite
def _stamps(draw: st.DrawFn) -> str:
    """RFC 3339 strings as devices write them, now and then slightly wrong."""
    moment = draw(st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30)))
    separator = draw(st.sampled_from("TTt x"))
    text = f"{moment.year:04d}-{moment:%m-%d}{separator}{moment:%H:%M:%S}"
    if draw(st.booleans()):
        text += "." + draw(st.text("0123456789", max_size=12))
    zone = draw(
        st.one_of(
            st.sampled_from(["Z", "z", "", "+24:00", "+05:99", "+5:00", "-00:00", "+0530"]),
            st.builds(
                lambda sign, minutes: f"{sign}{minutes // 60:02d}:{minutes % 60:02d}",
                st.sampled_from("+-"),
                st.integers(0, 23 * 60 + 59),
            ),
        )
    )
    text += zone
    for _ in range(draw(st.integers(0, 2))):  # a character replaced: digits, separators, others
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.sampled_from("09-:.Z+ T٣²x")) + text[at + 1 :]
    return text


@settings(max_examples=3000, deadline=None)
@given(text=_stamps())
def test_the_canonical_reader_agrees_with_the_general_parser(text: str) -> None:
    general = _outcome(_parse_ns_by_regex, text)
    assert _outcome(parse_ns, text) == general
    assert _canonical_ns(text) in (None, general)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22T10:00:00Z",
        "2026-11-22t10:00:00z",
        "2026-11-22 10:00:00.5Z",
        "2026-11-22T10:00:00.123456789123+01:00",
        "2024-02-29T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59.999999999Z",
    ],
)
def test_the_canonical_shapes_take_the_canonical_reader(text: str) -> None:
    """The positive control of the agreement above: these are read by slicing, not passed on."""
    assert _canonical_ns(text) == _parse_ns_by_regex(text)
