"""What every reading has in common, whatever the device: `ts`, `seq`, and strict rules.

A reading model is a pydantic v2 model that:
- accepts only the fields it declares (unknown fields are an error, not ignored),
- accepts no strings for numbers ("38.5" is an error) and no NaN or Infinity,
- stores `ts` as integer nanoseconds since the Unix epoch, whichever of the two wire forms
  (RFC 3339 with an offset, or epoch seconds as a JSON number) the device sent.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# InfluxDB stores timestamps as signed 64-bit nanoseconds; 1677..2262 is what fits.
MIN_TS_NS = -(2**63) + 2
MAX_TS_NS = 2**63 - 2

# RFC 3339 section 5.6: date-time with a mandatory offset. The fraction is kept to the
# nanosecond, which datetime alone cannot do.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9})\d*)?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


_MAX_ABS_EPOCH_S = 1e11  # far beyond the years 1677..2262, far below a float's overflow


def parse_timestamp(value: Any) -> int:
    """Turns a wire timestamp into integer nanoseconds since the epoch.

    Accepts an RFC 3339 string with an offset ("2026-11-22T10:00:00.5+01:00") or Unix epoch
    seconds as a JSON number (float seconds are kept to the microsecond, the resolution a
    float carries at today's epoch). Anything else raises ValueError with what was expected.
    """
    if isinstance(value, bool):
        raise ValueError("ts must be an RFC 3339 string or epoch seconds, not a boolean")
    if isinstance(value, int):
        ns = value * 1_000_000_000
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("ts must be a finite number")
        if abs(value) > _MAX_ABS_EPOCH_S:  # 2e302 * 1e6 is infinity, which round() refuses
            raise ValueError("ts is outside the range InfluxDB can store (years 1677..2262)")
        ns = round(value * 1_000_000) * 1_000
    elif isinstance(value, str):
        ns = _parse_rfc3339(value)
    else:
        raise ValueError("ts must be an RFC 3339 string with offset or epoch seconds (number)")
    if not MIN_TS_NS <= ns <= MAX_TS_NS:
        raise ValueError("ts is outside the range InfluxDB can store (years 1677..2262)")
    return ns


def _parse_rfc3339(text: str) -> int:
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


def format_timestamp(ts_ns: int) -> str:
    """Epoch nanoseconds as RFC 3339 UTC (microsecond precision), for people and JSON."""
    moment = _EPOCH + timedelta(microseconds=ts_ns // 1_000)
    return moment.isoformat().replace("+00:00", "Z")


Timestamp = Annotated[
    int,
    BeforeValidator(parse_timestamp),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "number"},
            ],
            "description": "RFC 3339 with offset, or Unix epoch seconds",
        }
    ),
]


class Reading(BaseModel):
    """One reading from one device. Subclasses add the device type's own fields."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        allow_inf_nan=False,
        frozen=True,
    )

    # Filled in by each device type; the names of its measurement fields, in wire order.
    measurement_fields: ClassVar[tuple[str, ...]] = ()

    ts: Timestamp
    seq: Annotated[int, Field(ge=0, le=2**63 - 1, description="per-device counter")]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.measurement_fields = tuple(n for n in cls.model_fields if n not in ("ts", "seq"))
