"""What every reading has in common, whatever the device: `ts`, `seq`, and strict rules.

A reading model is a pydantic v2 model that:
- accepts only the fields it declares (unknown fields are an error, not ignored),
- accepts no strings for numbers ("38.5" is an error) and no NaN or Infinity,
- stores `ts` as integer nanoseconds since the Unix epoch, whichever of the two wire forms
  (RFC 3339 with an offset, or epoch seconds as a JSON number) the device sent.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from devices.rfc3339 import parse_ns

# InfluxDB stores timestamps as signed 64-bit nanoseconds; 1677..2262 is what fits.
MIN_TS_NS = -(2**63) + 2
MAX_TS_NS = 2**63 - 2

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
        ns = parse_ns(value)
    else:
        raise ValueError("ts must be an RFC 3339 string with offset or epoch seconds (number)")
    if not MIN_TS_NS <= ns <= MAX_TS_NS:
        raise ValueError("ts is outside the range InfluxDB can store (years 1677..2262)")
    return ns


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
