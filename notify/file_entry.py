"""One `[[people]]`, `[[rotations]]` or `[[routes]]` table of the notify file, read key by key:
every problem is kept with its line (`FILE:LINE: person NAME: what is wrong, what to write`)
and reading goes on, so one run of `moclo notify check` shows them all."""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.durations import parse_duration, shown
from core.toml_lines import TomlLines
from devices.rule_base import SEVERITIES, Severity
from notify.walltime import to_instant

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
NAME_RULE = "lowercase letters, digits, - and _, up to 63 characters"
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)|24:00")


class Problems:
    """Every problem found, with its line, in the order of the file."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.found: list[tuple[int, str]] = []

    def add(self, line: int, what: str) -> None:
        self.found.append((line, f"{self.source}:{line}: {what}"))

    def sorted(self) -> list[str]:
        return [text for _, text in sorted(self.found, key=lambda p: p[0])]


def did_you_mean(word: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class Entry:
    """The index-th `[[table]]` of the file, and the problems found in it."""

    lines: TomlLines
    index: int
    data: dict[str, Any]
    kind: str  # person, rotation, route: how messages name it
    problems: Problems
    ok: bool = field(default=True, init=False)

    @property
    def label(self) -> str:
        name = self.data.get("name")
        return f"{self.kind} {name}" if isinstance(name, str) else f"{self.kind} #{self.index + 1}"

    @property
    def header(self) -> int:
        return self.lines.table(self.index)

    def line(self, key: str, item: int | None = None) -> int:
        """The line of `key` (or of the item-th `{…}` of its array), else of the header."""
        if key not in self.data:
            return self.header
        if item is None:
            return self.lines.key(self.index, key)
        return self.lines.element(self.index, key, item)

    def bad(self, key: str, what: str, item: int | None = None) -> None:
        self.problems.add(self.line(key, item), f"{self.label}: {what}")
        self.ok = False

    def unknown_keys(
        self,
        table: dict[str, Any],
        allowed: Collection[str],
        *,
        key: str = "",
        item: int | None = None,
        what: str = "",
    ) -> None:
        """A problem for each key of `table` (the entry, or an item of its array `key`) that
        is not `allowed`."""
        for name in table:
            if name not in allowed:
                hint = did_you_mean(name, allowed)
                where = what or f"a {self.kind}"
                self.bad(
                    key or name,
                    f"unknown key {name!r}{hint}; {where} has {', '.join(allowed)}",
                    item,
                )

    def name(self) -> str:
        value = self.data.get("name")
        if not (isinstance(value, str) and NAME.fullmatch(value)):
            self.bad("name", f'name is required: {NAME_RULE}, e.g. name = "dr-jansen"')
            return ""
        return value

    def names(
        self,
        key: str,
        *,
        rule: re.Pattern[str],
        allowed: str,
        example: str,
        required: bool = False,
    ) -> tuple[str, ...]:
        """A list of names, each matching `rule` (`allowed` says so in words); a single string
        is taken as a list of one."""
        value = self.data.get(key)
        if value is None:
            if required:
                self.bad(key, f"{key} is required, e.g. {key} = {example}")
            return ()
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            self.bad(key, f"{key} must be a list of names, e.g. {key} = {example}")
            return ()
        wrong = [v for v in values if not rule.fullmatch(v)]
        if wrong:
            self.bad(key, f"{key}: {shown(wrong[0])} is not allowed: {allowed}")
        if required and not values:
            self.bad(key, f"{key} must name at least one, e.g. {key} = {example}")
        return tuple(values)

    def severity(self, key: str, default: Severity) -> Severity:
        value = self.data.get(key, default)
        return _severity(value) or self._bad_severity(key, value, default)

    def _bad_severity(self, key: str, value: object, default: Severity) -> Severity:
        self.bad(key, f"{key} must be one of {', '.join(SEVERITIES)}, not {_value(value)}")
        return default

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            self.bad(key, f"{key} must be true or false, not {_value(value)}")
            return default
        return value

    def duration(
        self, key: str, default: float | None, *, zero: bool = False, least: float = 0.0
    ) -> float | None:
        """Seconds in `key` (`zero`: "0s" allowed; else at least `least`), else `default`."""
        if key not in self.data:
            return default
        seconds, problem = read_duration(self.data[key], zero=zero)
        if seconds is not None and 0 < seconds < least:
            seconds, problem = None, f'must be at least {least:g} seconds, e.g. "{least / 60:g}m"'
        if problem:
            self.bad(key, f"{key}: {problem}")
        return seconds if seconds is not None else default

    def zone(self, key: str = "time_zone") -> str:
        value = self.data.get(key, "UTC")
        problem = zone_problem(value)
        if problem:
            self.bad(key, f"{key}: {problem}")
            return "UTC"
        return str(value)


def read_duration(value: object, *, zero: bool) -> tuple[float | None, str]:
    """Seconds in "90s", "15m", "2h", "7d" or a number of seconds, and a problem or ""."""
    example = 'write e.g. "30s", "10m", "1h" or "7d"'
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None, f"{_value(value)} is not a duration: {example}"
    text = str(value)
    if zero and text.strip() in ("0", "0s", "0.0"):
        return 0.0, ""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        return None, f"{exc}" + (' (or "0s")' if zero else "")
    if seconds > 366 * 86_400:
        return None, f"{shown(text)} is more than a year: {example}"
    return seconds, ""


def zone_problem(value: object) -> str:
    """Why `value` is not an IANA time zone name, or ""."""
    if not isinstance(value, str) or not value or value.startswith(("/", ".")) or ".." in value:
        return f'{_value(value)} is not a time zone: write an IANA name, e.g. "Europe/Amsterdam"'
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f'{shown(value)} is not a time zone: write an IANA name, e.g. "Europe/Amsterdam"'
    return ""


def clock(value: object) -> time | None:
    """A time of day from "22:00" (or a TOML local time); "24:00" is the midnight ending a day."""
    if isinstance(value, time):
        return value.replace(second=0, microsecond=0)
    if isinstance(value, str) and _CLOCK.fullmatch(value.strip()):
        hours, minutes = value.strip().split(":")
        return time(int(hours) % 24, int(minutes))
    return None


def moment(value: object, zone_name: str) -> datetime | None:
    """An aware datetime in the zone from "2026-11-30T08:00" (wall-clock time there), a TOML
    local date-time, or either with an offset."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    # Far-off years are mistakes (and would overflow when moved into another time zone).
    if not isinstance(value, datetime) or not 1970 <= value.year <= 2200:
        return None
    zone = ZoneInfo(zone_name)
    if value.tzinfo is None:
        return to_instant(value, zone).astimezone(zone)
    return value.astimezone(zone)


def _severity(value: object) -> Severity | None:
    for severity in SEVERITIES:
        if value == severity:
            return severity
    return None


def _value(value: object) -> str:
    """A value from the file, shown in a message (never a channel's: those are secrets)."""
    return shown(value) if isinstance(value, str) else shown(repr(value))
