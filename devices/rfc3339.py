"""RFC 3339 times, parsed and written in one place; each precision below is part of a format.

- `parse_ns`: a wire `ts` string (RFC 3339 with an offset) to epoch nanoseconds, the fraction
  kept to the nanosecond (datetime alone stops at the microsecond), as InfluxDB stores it.
- `format_us`: epoch nanoseconds for people and JSON (alerts on MQTT and the HTTP API, the live
  stream, a device's last seen): microseconds, the fraction left out on a whole second. An
  alert published this way is parsed back by `parse_ns`, so its format must not change.
- `format_shortest`: the read side's times (`moclo query`, `/api/series`): exact to the
  nanosecond, with 0, 3, 6 or 9 fraction digits, only as many as the time needs.
- `format_log_ms`: a JSON log line's `ts`, to the millisecond, as log collectors read it.
- `now_seconds`: the present to the second, for what a file or a registry row records
  (`created_at`, `revoked_at`, the stamp in a generated ACL file).
- `format_seconds_spaced`: a time as the alert commands print it, to the second with a space.
- `now_compact`: the present as ISO 8601's basic format, which fits in a file name.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS = 1_000_000_000

# RFC 3339 section 5.6: date-time with a mandatory offset. The fraction is kept to the
# nanosecond, which datetime alone cannot do.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9})\d*)?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def parse_ns(text: str) -> int:
    """Epoch nanoseconds of an RFC 3339 string with an offset; ValueError saying what is
    expected if it is not one, or is not a valid date-time."""
    ns = _canonical_ns(text)
    return _parse_ns_by_regex(text) if ns is None else ns


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# The date and time of the shapes devices send, ASCII digits only (`\d` would take any script's).
_CANONICAL_HEAD = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}")


def _canonical_ns(text: str) -> int | None:
    """`parse_ns` of the shapes devices send (`2026-11-22T10:00:00Z`, a fraction, `+01:00`):
    the date and time checked by one small pattern and read by datetime.fromisoformat, the
    fraction and offset by slicing; about a third of the general parser's cost, and the same
    number (tests/test_rfc3339.py compares both on generated strings). None for anything else
    or out of range, which the general parser then decides, with its error message."""
    if len(text) < 20 or not text.isascii() or _CANONICAL_HEAD.match(text) is None:
        return None
    if text[19] == ".":  # a fraction, then the zone
        if text[-1] in "Zz":
            digits, zone = text[20:-1], ""
        else:
            digits, zone = text[20:-6], text[-6:]
        if not digits.isdigit():  # also refuses an empty fraction
            return None
        fraction = int(digits[:9].ljust(9, "0"))
    else:
        fraction, zone = 0, text[19:]
        if zone in ("Z", "z"):
            zone = ""
    offset = 0
    if zone:
        if len(zone) != 6 or zone[0] not in "+-" or zone[3] != ":":
            return None
        hours, minutes = zone[1:3], zone[4:6]
        if not (hours.isdigit() and minutes.isdigit()) or hours > "23" or minutes > "59":
            return None  # larger offsets: the general parser says what is wrong with them
        offset = int(hours) * 3600 + int(minutes) * 60
        if zone[0] == "-":
            offset = -offset
    # Checked here, not left to fromisoformat: ISO 8601 allows 24:00:00, RFC 3339 does not.
    if text[11:13] > "23" or text[14:16] > "59" or text[17:19] > "59":
        return None
    try:
        moment = datetime.fromisoformat(text[:19])
    except ValueError:  # no such day (February 30th), or year 0
        return None
    days = moment.toordinal() - _EPOCH_ORDINAL
    seconds = days * 86_400 + moment.hour * 3600 + moment.minute * 60 + moment.second
    return (seconds - offset) * 1_000_000_000 + fraction


def _parse_ns_by_regex(text: str) -> int:
    """`parse_ns` of any string: the general parser, and the one that explains a refusal."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(
            "ts string must be RFC 3339 with an offset, e.g. 2026-11-22T10:00:00Z or "
            "2026-11-22T10:00:00.250+01:00"
        )
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        offset = timedelta(0)
        if not zulu:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            if sign == "-":
                offset = -offset
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=timezone(offset),
        )
    except ValueError as exc:
        raise ValueError(f"ts is not a valid date-time: {exc}") from None
    whole_us = (moment - _EPOCH) // timedelta(microseconds=1)
    fraction_ns = int((fraction or "0").ljust(9, "0"))
    return whole_us * 1_000 + fraction_ns


def format_us(ts_ns: int) -> str:
    """`2026-11-22T06:00:00.250000Z`, `2026-11-22T06:00:00Z`: UTC to the microsecond."""
    moment = _EPOCH + timedelta(microseconds=ts_ns // 1_000)
    return moment.isoformat().replace("+00:00", "Z")


def format_shortest(ns: int) -> str:
    """RFC 3339 in UTC ending in Z, with 3, 6 or 9 fraction digits only when needed."""
    seconds, fraction = divmod(ns, _NS)
    text = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction == 0:
        return text + "Z"
    if fraction % 1_000_000 == 0:
        return f"{text}.{fraction // 1_000_000:03d}Z"
    if fraction % 1_000 == 0:
        return f"{text}.{fraction // 1_000:06d}Z"
    return f"{text}.{fraction:09d}Z"


def format_log_ms(created: float, msecs: float) -> str:
    """`2026-11-22T06:00:00.250Z`: a log record's `created` (epoch seconds) and `msecs` (its
    milliseconds, as logging computed them, so that the stamp agrees with other formatters')."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(msecs):03d}Z"


def now_seconds(*, zulu: bool = True) -> str:
    """`2026-11-22T06:00:00Z` now; with `zulu=False` the offset is written `+00:00`."""
    text = datetime.now(UTC).isoformat(timespec="seconds")
    return text.replace("+00:00", "Z") if zulu else text


def format_seconds_spaced(ts_ns: int) -> str:
    """`2026-11-22 06:00:00Z`: RFC 3339's space-separated form, to the second."""
    return datetime.fromtimestamp(ts_ns / _NS, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def now_compact() -> str:
    """`20261122T060000Z` now: ISO 8601's basic format, without the characters a file name
    had better avoid."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
