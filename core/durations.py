"""Durations on the command line: `500ms`, `30s`, `5m`, `2h`, `1d`, or plain seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_SHOWN = 24  # characters of a bad value repeated in a message; a 5,000-digit one is not


def parse_duration(text: str) -> float:
    """Seconds in `text`, finite and more than zero; ValueError with the accepted forms
    otherwise (a number too long for a float, such as 400 nines, is refused, not infinite)."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{shown(text)} is not a duration: use e.g. 500ms, 30s, 5m, 2h, 1d")
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds):
        raise ValueError(f"{shown(text)} is too long to be a duration")
    if seconds <= 0:
        raise ValueError(f"{shown(text)}: a duration must be more than zero")
    return seconds


def shown(text: str) -> str:
    """`text` quoted for a message, cut short if it is long."""
    return repr(text if len(text) <= _SHOWN else text[: _SHOWN - 4] + "…")
