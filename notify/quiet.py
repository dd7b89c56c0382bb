"""Quiet hours: when a person is not to be woken, and until when.

Each window is daily, in the person's time zone (`22:00`–`07:00` spans midnight); a window
holds back everything below its `breakthrough` severity. Windows that follow each other
(`22:00`–`00:00` and `00:00`–`07:00`) hold until the last one ends. The end is wall-clock time,
so a night with a daylight saving time change is an hour shorter or longer, and `07:00` stays
`07:00`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from devices.rule_base import SEVERITIES, Severity
from notify.model import Person, QuietHours
from notify.walltime import to_instant, wall


def quiet_until(person: Person, severity: Severity, at: datetime) -> datetime | None:
    """None if `person` may be told about something of `severity` at the aware instant `at`;
    else the instant (UTC) their quiet hours end."""
    holding = [q for q in person.quiet_hours if _rank(severity) < _rank(q.breakthrough)]
    if not holding:
        return None
    zone = ZoneInfo(person.time_zone)
    until = at
    # Each step moves to the end of a window at least a minute later; 2 a window are plenty.
    for _ in range(2 * len(holding) + 1):
        local = wall(until, zone)
        ends = [end for q in holding if (end := _window_end(q, local)) is not None]
        if not ends:
            break
        until = max(until, to_instant(max(ends), zone))
    return None if until == at else until


def _window_end(quiet: QuietHours, local: datetime) -> datetime | None:
    """When the window containing the naive local time `local` ends (naive), or None if
    `local` is outside it."""
    now = local.time()
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    end = day.replace(hour=quiet.end.hour, minute=quiet.end.minute)
    if quiet.start < quiet.end:
        return end if quiet.start <= now < end.time() else None
    # Spans midnight (22:00–07:00): in it from the start to midnight, and from midnight on.
    if now >= quiet.start:
        return end + timedelta(days=1)
    return end if now < quiet.end else None


def _rank(severity: Severity) -> int:
    return SEVERITIES.index(severity)
