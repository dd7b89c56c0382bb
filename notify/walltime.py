"""Wall-clock time in a time zone, read as instants: what "08:00 in Amsterdam" is on a given
day, also on the days the clocks change.

People write local times (a handoff at 08:00, quiet hours until 07:00), so rotations and quiet
hours count in the wall clock of their time zone and convert each boundary to an instant. A
local time that exists twice (the hour the clocks go back) is read as its first occurrence; one
that does not exist (the hour skipped when the clocks go forward) as the moment the clock jumps
past it, so boundaries never run backwards.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo


def to_instant(local: datetime, zone: ZoneInfo) -> datetime:
    """The instant (aware, UTC) at which the wall clock in `zone` shows the naive `local`, or,
    for a local time skipped by a DST change, the instant of the change."""
    first = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == local:
        return first
    # Skipped: fold=0 reads it with the offset before the change (an instant after the jump),
    # fold=1 with the one after (an instant before it); the jump lies between.
    before = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    after = first
    while after - before > timedelta(seconds=1):
        middle = before + (after - before) / 2
        if middle.astimezone(zone).replace(tzinfo=None) < local:
            before = middle
        else:
            after = middle
    return after.replace(microsecond=0) if after.microsecond else after


def wall(at: datetime, zone: ZoneInfo) -> datetime:
    """What the wall clock in `zone` shows at the aware instant `at`, as a naive datetime."""
    return at.astimezone(zone).replace(tzinfo=None)
