"""The keys of a rules file's `[[rule]]` table: which each rule kind takes, and how each TOML
value becomes a rule's setting (durations, numbers, points), with messages that say what is
allowed. The format itself is described in `rulesfile.py`."""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from core.durations import parse_duration
from devices.rules import RULE_KINDS, Rule

# Rule names become InfluxDB tag values and parts of alert ids: keep them plain.
NAME_RULE = "^[a-z0-9][a-z0-9_-]{0,62}$"
RULE_NAME = re.compile(NAME_RULE)

SCOPE_KEYS = ("device_type", "name", "tenant", "device", "kind", "enabled")
DURATIONS = {
    "for": "for_s",
    "clear_for": "clear_for_s",
    "window": "window_s",
    "recent": "recent_s",
    "min_history": "min_history_s",
    "at_least": "at_least_s",
    "within": "within_s",
    "detour": "detour_s",
}
TOML_KEY = {field: key for key, field in DURATIONS.items()}
NUMBERS = {"raise_at", "clear_at", "after_intervals", "radius_m", "margin_m", "above", "below"}
NUMBERS |= {"arrived_m", "min_trip_m", "min_speed_kmh"}
INTEGERS = {"min_readings", "clear_readings"}
TEXTS = {"field", "direction", "while_field", "compare", "baseline", "where"}
TEXTS |= {"lat_field", "lon_field", "speed_field", "severity", "message"}
_ZERO = re.compile(r"\s*0+(?:\.0*)?\s*(?:ms|s|m|h|d)?\s*")


def _settings_of(cls: type[Rule]) -> tuple[str, ...]:
    keys = [TOML_KEY.get(f.name, f.name) for f in dataclasses.fields(cls) if f.name != "name"]
    return (*keys, "above", "below") if "direction" in keys else tuple(keys)


# The TOML keys each kind takes, besides SCOPE_KEYS.
SETTINGS: dict[str, tuple[str, ...]] = {k: _settings_of(cls) for k, cls in RULE_KINDS.items()}
ANY_SETTING = {key for keys in SETTINGS.values() for key in keys}


def convert(key: str, value: Any) -> Any:
    if key in DURATIONS:
        return _duration(key, value)
    if key in NUMBERS:
        return number(key, value)
    if key in INTEGERS and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{key} must be a whole number, not {value!r}")
    if key in TEXTS and not isinstance(value, str):
        raise ValueError(f"{key} must be a string (in quotes), not {value!r}")
    if key == "center":
        return _point(key, value)
    if key == "polygon":
        if not isinstance(value, list):
            raise ValueError("polygon must be a list of corners: [[lat, lon], [lat, lon], ...]")
        return tuple(_point("each polygon corner", corner) for corner in value)
    return value  # a setting without a TOML type here: the dataclass judges it


def number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number, not {value!r}")
    return float(value)


def _duration(key: str, value: Any) -> float:
    zero_ok = key != "at_least"
    allowed = 'e.g. "90s", "15m", "2h", "1d" or a number of seconds'
    allowed += ", or 0" if zero_ok else ", more than zero"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{key} must be a duration ({allowed}), not {value!r}")
    if isinstance(value, str):
        if zero_ok and _ZERO.fullmatch(value):
            return 0.0
        try:
            return parse_duration(value)
        except ValueError:
            raise ValueError(f"{key} = {value!r} is not a duration: use {allowed}") from None
    if not (value >= 0 if zero_ok else value > 0) or value == float("inf"):
        raise ValueError(f"{key} = {value!r} is not a duration: use {allowed}")
    return float(value)


def _point(key: str, value: Any) -> tuple[float, float]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value)
    ):
        raise ValueError(f"{key} must be [lat, lon] in degrees, e.g. [52.09, 5.12], not {value!r}")
    return (float(value[0]), float(value[1]))


def unknown_key(key: str, kind: str | None, allowed: Sequence[str]) -> str:
    elsewhere = [k for k, keys in SETTINGS.items() if key in keys]
    if kind is not None and elsewhere:
        hint = f" ({key} is a setting of {' and '.join(elsewhere)} rules)"
    else:
        hint = did_you_mean(key, [*allowed, *SCOPE_KEYS])
    what = f"a {kind} rule" if kind else "a rule"
    return (
        f"unknown key {key!r}{hint}; {what} takes {', '.join(allowed)} "
        f"(besides {', '.join(SCOPE_KEYS)})"
    )


def inherited(message: str, base: Rule | None, settings: Mapping[str, Any], where: str) -> str:
    """For a change that clashes with what it kept: the kept settings the message names."""
    if base is None:
        return ""
    given = set(settings)
    if given & {"above", "below"}:
        given |= {"direction", "raise_at"}
    kept = []
    for f in dataclasses.fields(base):
        key = TOML_KEY.get(f.name, f.name)
        if key not in given and re.search(rf"(?<![\w.]){re.escape(key)}(?![\w.])", message):
            kept.append(f"{key} = {getattr(base, f.name)!r}")
    return f" ({where} has {', '.join(kept)}; give it here too)" if kept else ""


def did_you_mean(word: str, choices: Sequence[str] | Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
