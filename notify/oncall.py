"""Who is on call: a rotation's shifts, counted in its time zone's wall clock, with overrides.

The k-th shift (k = 0, 1, …) starts when the wall clock in the rotation's time zone shows
`handoff + k × shift`, so a weekly 08:00 handoff stays at 08:00 through daylight saving time
changes (that week is an hour shorter or longer), and the k-th shift is the k-th person's, in
the rotation's order, round and round.

Before the first handoff the first person is on call: a rotation written today that starts next
Monday does not leave the pager empty until then, and puts nobody on call who would not be first
anyway.

An override puts its person first in line while it lasts (a swap, a stand-in, someone who is
not in the rotation at all); the others keep their order behind. Overrides of one rotation never
overlap (the notify file refuses it), so at most one is active at a time.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from notify.model import Override, Rotation
from notify.walltime import to_instant, wall


def on_call(rotation: Rotation, at: datetime) -> tuple[str, ...]:
    """The people in line at the aware instant `at`: first the one on call (an active
    override's person, else the shift's), then the rest in the rotation's order after them."""
    index = _shift_index(rotation, at)
    people = rotation.people
    line = [people[(max(index, 0) + i) % len(people)] for i in range(len(people))]
    override = override_at(rotation, at)
    if override is not None:
        line = [override.person, *(p for p in line if p != override.person)]
    return tuple(line)


def override_at(rotation: Rotation, at: datetime) -> Override | None:
    """The override active at `at`, if any."""
    return next((o for o in rotation.overrides if o.start <= at < o.end), None)


def shifts(
    rotation: Rotation, start: datetime, end: datetime
) -> list[tuple[datetime, datetime, str]]:
    """Who is on call from `start` to `end` (aware), as consecutive (from, to, person) pieces
    in UTC: the rotation's shifts cut at `start` and `end`, with overrides cut in."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end <= start:
        return []
    pieces: list[tuple[datetime, datetime, str]] = []
    index = _shift_index(rotation, start)
    at = start
    while at < end:
        following = _shift_start(rotation, max(index + 1, 0))
        piece_end = min(following, end)
        if piece_end > at:
            person = rotation.people[max(index, 0) % len(rotation.people)]
            if pieces and pieces[-1][2] == person:  # before the handoff, or a rotation of one
                pieces[-1] = (pieces[-1][0], piece_end, person)
            else:
                pieces.append((at, piece_end, person))
        at, index = max(at, piece_end), index + 1
    return _with_overrides(pieces, rotation.overrides, start, end)


def _with_overrides(
    pieces: list[tuple[datetime, datetime, str]],
    overrides: tuple[Override, ...],
    start: datetime,
    end: datetime,
) -> list[tuple[datetime, datetime, str]]:
    for override in sorted(overrides, key=lambda o: o.start):
        o_start = max(override.start.astimezone(UTC), start)
        o_end = min(override.end.astimezone(UTC), end)
        if o_start >= o_end:
            continue
        kept: list[tuple[datetime, datetime, str]] = []
        for a, b, person in pieces:
            if a < o_start:
                kept.append((a, min(b, o_start), person))
            if b > o_end:
                kept.append((max(a, o_end), b, person))
        kept.append((o_start, o_end, override.person))
        pieces = sorted(kept, key=lambda p: p[0])
    return pieces


def _shift_start(rotation: Rotation, index: int) -> datetime:
    """When shift `index` starts (UTC); shift 0 starts at the handoff, and (for the time
    before it) shift -1 at the beginning of time."""
    if index < 0:
        return datetime.min.replace(tzinfo=UTC)
    zone = ZoneInfo(rotation.time_zone)
    local = wall(rotation.handoff, zone) + timedelta(seconds=rotation.shift_s * index)
    return to_instant(local, zone)


def _shift_index(rotation: Rotation, at: datetime) -> int:
    """The shift that `at` falls in; -1 before the first handoff."""
    if at < rotation.handoff:
        return -1
    zone = ZoneInfo(rotation.time_zone)
    elapsed = (wall(at, zone) - wall(rotation.handoff, zone)).total_seconds()
    # The wall clock's count is right but for a DST change's hour: step to the exact shift.
    index = max(math.floor(elapsed / rotation.shift_s), 0)
    while index > 0 and _shift_start(rotation, index) > at:
        index -= 1
    while _shift_start(rotation, index + 1) <= at:
        index += 1
    return index
