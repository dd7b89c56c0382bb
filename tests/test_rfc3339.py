"""devices/rfc3339.py: each form keeps the precision its readers expect."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from devices.rfc3339 import (
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
