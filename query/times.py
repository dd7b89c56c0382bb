"""Times and buckets as people write them, and as the read side prints them.

A time is RFC 3339 with an offset (`2026-11-22T06:00:00Z`), a date (`2026-11-22`, midnight
UTC), Unix epoch seconds (`1795327200`), `now`, or now plus or minus a duration (`now-6h`,
`-6h`). A duration is `30s`, `5m`, `6h`, `7d` (see `core/durations.py`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from core.durations import parse_duration, shown
from devices.base import MAX_TS_NS, MIN_TS_NS, parse_timestamp
from devices.rule_base import format_seconds
from query.errors import QueryError

NS = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RELATIVE = re.compile(r"(?:now)?\s*([+-])\s*(.+)|now")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_TIME_FORMS = "RFC 3339 (2026-11-22T06:00:00Z), a date (2026-11-22), epoch seconds, or now-6h"

# The bucket sizes `every=auto` chooses from: ones that read well on an axis.
ROUND_BUCKETS_S = (
    1, 2, 5, 10, 15, 30,
    60, 2 * 60, 5 * 60, 10 * 60, 15 * 60, 30 * 60,
    3600, 2 * 3600, 3 * 3600, 6 * 3600, 12 * 3600,
    86_400, 2 * 86_400, 7 * 86_400, 30 * 86_400, 365 * 86_400,
)  # fmt: skip


def parse_time(text: str, *, now_ns: int, param: str, name: str) -> int:
    """Epoch nanoseconds of `text` (one of the forms above); QueryError naming `name` if not."""
    stripped = text.strip()
    relative = _RELATIVE.fullmatch(stripped)
    try:
        if relative is not None:
            sign, amount = relative.groups()
            offset = 0 if sign is None else round(parse_duration(amount) * NS)
            ns = now_ns - offset if sign == "-" else now_ns + offset
        elif stripped.isdigit():
            ns = int(stripped) * NS
        elif (date := _DATE.fullmatch(stripped)) is not None:
            year, month, day_of_month = map(int, date.groups())
            day = datetime(year, month, day_of_month, tzinfo=UTC)
            ns = (day - _EPOCH) // timedelta(microseconds=1) * 1_000
        else:
            ns = parse_timestamp(stripped)
    except (ValueError, OverflowError):
        raise QueryError(f"{name} {text!r} is not a time: use {_TIME_FORMS}", param=param) from None
    check_time_range(ns, param=param, name=name)
    return ns


def check_time_range(ns: int, *, param: str, name: str) -> None:
    if not MIN_TS_NS <= ns <= MAX_TS_NS:
        raise QueryError(
            f"{name} is outside what InfluxDB stores (years 1677 to 2262)", param=param
        )


MAX_SPAN_S = (MAX_TS_NS - MIN_TS_NS) // NS  # InfluxDB's whole time line: about 584 years


def parse_seconds(text: str, *, param: str, name: str) -> int:
    """A duration of whole seconds, at least 1 (`5m` → 300), no longer than InfluxDB's whole
    time line; QueryError naming `name` if not."""
    seconds = _duration(text, param=param, name=name)
    if seconds > MAX_SPAN_S:
        raise QueryError(
            f"{name} {shown(text)} is too long: at most {MAX_SPAN_S // 86_400}d, InfluxDB's whole "
            "time line (years 1677 to 2262)",
            param=param,
        )
    if seconds < 1 or seconds != int(seconds):
        raise QueryError(f"{name} {shown(text)} must be whole seconds, at least 1s", param=param)
    return int(seconds)


def parse_since(text: str, *, now_ns: int, param: str = "since", name: str = "since") -> float:
    """A duration back from `now_ns` (`6h` → 21600.0) that stays within what InfluxDB stores;
    QueryError naming `name` if not. `moclo query`, `moclo alerts` and the API share it."""
    seconds = _duration(text, param=param, name=name)
    # Compared as floats before any integer or timedelta is made of it: nothing can overflow.
    if seconds > (now_ns - MIN_TS_NS) / NS:
        raise QueryError(
            f"{name} {shown(text)} is too long: it reaches back before 1677, the earliest time "
            f"InfluxDB stores; at most {(now_ns - MIN_TS_NS) // NS // 86_400}d",
            param=param,
        )
    return seconds


def _duration(text: str, *, param: str, name: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise QueryError(f"{name}: {exc}", param=param) from None


def round_bucket(at_least_s: float) -> int:
    """The smallest round bucket size of at least `at_least_s` seconds."""
    for size in ROUND_BUCKETS_S:
        if size >= at_least_s:
            return size
    years = -(-int(at_least_s) // ROUND_BUCKETS_S[-1])
    return years * ROUND_BUCKETS_S[-1]


def auto_bucket(start_ns: int, end_ns: int, points: int) -> int:
    """A round bucket size that gives at most `points` buckets over [start, end)."""
    return round_bucket((end_ns - start_ns) / NS / points)


def bucket_count(start_ns: int, end_ns: int, every_s: int) -> int:
    """How many buckets, aligned to the epoch as InfluxDB aligns them, overlap [start, end)."""
    every_ns = every_s * NS
    return (end_ns - 1) // every_ns - start_ns // every_ns + 1


def format_every(every_s: int) -> str:
    """`300` → `5m`, `5400` → `1h30m`."""
    return format_seconds(every_s)
