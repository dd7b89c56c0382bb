"""On-call rotations and quiet hours: wall-clock time in the person's or rotation's time zone,
also on the days the clocks change (Europe/Amsterdam: last Sunday of March and October)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.rule_base import SEVERITIES, Severity
from notify.model import Channel, Override, Person, QuietHours, Rotation
from notify.oncall import on_call, shifts
from notify.quiet import quiet_until

AMS = ZoneInfo("Europe/Amsterdam")
DOCTORS = ("dr-jansen", "dr-bakker", "dr-visser")


def ams(*args: int) -> datetime:
    return datetime(*args, tzinfo=AMS)  # type: ignore[misc]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def weekly(handoff: datetime, *overrides: Override, shift_s: float = 7 * 86400) -> Rotation:
    return Rotation("cardiology", "cardiology", DOCTORS, handoff, shift_s, "Europe/Amsterdam",
                    overrides)  # fmt: skip


@pytest.mark.parametrize(
    ("handoff", "change_day", "utc_hour"),
    [
        (ams(2026, 3, 23, 8), ams(2026, 3, 30, 8), 6),
        (ams(2026, 10, 19, 8), ams(2026, 10, 26, 8), 7),
    ],
    ids=["march-summer-time", "october-winter-time"],
)
def test_a_weekly_0800_handoff_stays_0800_across_the_clock_change(
    handoff: datetime, change_day: datetime, utc_hour: int
) -> None:
    rotation = weekly(handoff)
    the_handoff = change_day.astimezone(UTC)
    assert the_handoff.hour == utc_hour  # 08:00 CEST is 06:00 UTC, 08:00 CET 07:00 UTC
    assert on_call(rotation, the_handoff - timedelta(seconds=1))[0] == "dr-jansen"
    assert on_call(rotation, the_handoff)[0] == "dr-bakker"
    # The week with the change is an hour shorter (March) or longer (October).
    (first, second) = shifts(rotation, handoff, change_day + timedelta(days=1))[:2]
    assert first[1] == the_handoff and second == (the_handoff, second[1], "dr-bakker")
    assert first[1] - first[0] == timedelta(hours=167 if utc_hour == 6 else 169)


def test_a_daily_rotation_hands_off_at_0800_on_the_day_the_clocks_go_forward() -> None:
    rotation = weekly(ams(2026, 3, 27, 8), shift_s=86400)
    assert on_call(rotation, utc(2026, 3, 29, 5, 59))[0] == "dr-bakker"  # 07:59 CEST
    assert on_call(rotation, utc(2026, 3, 29, 6, 0))[0] == "dr-visser"  # 08:00 CEST


def test_the_line_is_the_rotation_order_from_the_one_on_call() -> None:
    rotation = weekly(ams(2026, 11, 30, 8))
    assert on_call(rotation, ams(2026, 12, 1, 12)) == DOCTORS
    assert on_call(rotation, ams(2026, 12, 8, 12)) == ("dr-bakker", "dr-visser", "dr-jansen")
    assert on_call(rotation, ams(2026, 12, 22, 12)) == DOCTORS  # round and round


def test_before_the_first_handoff_the_first_person_is_on_call() -> None:
    rotation = weekly(ams(2026, 11, 30, 8))
    assert on_call(rotation, ams(2026, 11, 1, 12)) == DOCTORS
    before = shifts(rotation, ams(2026, 11, 1), ams(2026, 12, 10))
    assert before[0] == (ams(2026, 11, 1).astimezone(UTC), ams(2026, 12, 7, 8).astimezone(UTC),
                         "dr-jansen")  # fmt: skip


def test_an_override_puts_its_person_first_while_it_lasts() -> None:
    christmas = Override("dr-visser", ams(2026, 12, 24, 18), ams(2026, 12, 27, 8))
    rotation = weekly(ams(2026, 11, 30, 8), christmas)
    assert on_call(rotation, ams(2026, 12, 24, 17, 59))[0] == "dr-jansen"
    assert on_call(rotation, ams(2026, 12, 24, 18)) == ("dr-visser", "dr-jansen", "dr-bakker")
    assert on_call(rotation, ams(2026, 12, 27, 8))[0] == "dr-jansen"  # its end is not in it
    pieces = shifts(rotation, ams(2026, 12, 21, 8), ams(2026, 12, 28, 8))
    assert [(p[0].astimezone(AMS), p[2]) for p in pieces] == [
        (ams(2026, 12, 21, 8), "dr-jansen"),
        (ams(2026, 12, 24, 18), "dr-visser"),
        (ams(2026, 12, 27, 8), "dr-jansen"),
    ]


def test_an_override_by_someone_outside_the_rotation_adds_them_in_front() -> None:
    locum = Override("dr-locum", ams(2026, 12, 1), ams(2026, 12, 2))
    line = on_call(weekly(ams(2026, 11, 30, 8), locum), ams(2026, 12, 1, 12))
    assert line == ("dr-locum", *DOCTORS)


ZONES = ["Europe/Amsterdam", "America/New_York", "Australia/Lord_Howe", "Pacific/Apia", "UTC"]


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    handoff=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
    shift_s=st.sampled_from([1800, 3600, 5400, 8 * 3600, 12 * 3600, 86400, 7 * 86400]),
    offset_s=st.integers(min_value=-20 * 86400, max_value=400 * 86400),
    people=st.integers(min_value=1, max_value=4),
)
def test_shifts_tile_time_and_agree_with_who_is_on_call(
    zone: str, handoff: datetime, shift_s: int, offset_s: int, people: int
) -> None:
    names = tuple(f"p{i}" for i in range(people))
    first = handoff.replace(tzinfo=ZoneInfo(zone))
    rotation = Rotation("r", "t", names, first, float(shift_s), zone)
    at = first.astimezone(UTC) + timedelta(seconds=offset_s)
    start, end = at - timedelta(days=3), at + timedelta(days=3)
    pieces = shifts(rotation, start, end)
    assert pieces[0][0] == start and pieces[-1][1] == end
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(pieces))
    (holding,) = [p for p in pieces if p[0] <= at < p[1]]
    line = on_call(rotation, at)
    assert holding[2] == line[0] and sorted(line) == sorted(names)


# Quiet hours

NIGHT = QuietHours(time(22), time(7), "critical")


def person(*quiet: QuietHours, zone: str = "Europe/Amsterdam") -> Person:
    return Person("dr-jansen", ("cardiology",), (Channel("ntfy://x"),), zone, quiet)


@pytest.mark.parametrize(
    ("at", "severity", "until"),
    [
        (ams(2026, 12, 7, 23), "warning", ams(2026, 12, 8, 7)),
        (ams(2026, 12, 8, 6, 59), "warning", ams(2026, 12, 8, 7)),
        (ams(2026, 12, 8, 7), "warning", None),
        (ams(2026, 12, 8, 21, 59), "info", None),
        (ams(2026, 12, 8, 22), "info", ams(2026, 12, 9, 7)),
        (ams(2026, 12, 7, 23), "critical", None),
        # The nights the clocks change: 07:00 stays 07:00, the night is an hour shorter/longer.
        (ams(2026, 3, 28, 23), "warning", utc(2026, 3, 29, 5)),
        (ams(2026, 10, 24, 23), "warning", utc(2026, 10, 25, 6)),
    ],
    ids=[
        "evening",
        "last-minute",
        "ends",
        "before",
        "starts",
        "breaks-through",
        "march",
        "october",
    ],
)
def test_quiet_hours_span_midnight_let_breakthrough_through_and_follow_the_clock(
    at: datetime, severity: Severity, until: datetime | None
) -> None:
    assert quiet_until(person(NIGHT), severity, at) == until


def test_windows_that_follow_each_other_hold_until_the_last_ends() -> None:
    evening = QuietHours(time(22), time(0), "critical")
    morning = QuietHours(time(0), time(7), "critical")
    assert quiet_until(person(evening, morning), "warning", ams(2026, 12, 7, 23)) == ams(
        2026, 12, 8, 7
    )


def test_each_window_has_its_own_breakthrough() -> None:
    sleep = QuietHours(time(23), time(6), "warning")  # woken for warnings at night
    dinner = QuietHours(time(18), time(19), "critical")  # not even for those at dinner
    doctor = person(sleep, dinner)
    assert quiet_until(doctor, "warning", ams(2026, 12, 7, 23, 30)) is None
    assert quiet_until(doctor, "info", ams(2026, 12, 7, 23, 30)) == ams(2026, 12, 8, 6)
    assert quiet_until(doctor, "warning", ams(2026, 12, 7, 18, 30)) == ams(2026, 12, 7, 19)


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    start=st.times().map(lambda t: t.replace(second=0, microsecond=0)),
    end=st.times().map(lambda t: t.replace(second=0, microsecond=0)),
    at=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
    severity=st.sampled_from(SEVERITIES),
)
def test_quiet_until_is_later_and_then_the_person_may_be_told(
    zone: str, start: time, end: time, at: datetime, severity: Severity
) -> None:
    if start == end:
        return  # the notify file refuses a window of no length
    someone = person(QuietHours(start, end, "critical"), zone=zone)
    moment = at.replace(tzinfo=UTC)
    until = quiet_until(someone, severity, moment)
    if severity == "critical":
        assert until is None
    elif until is not None:
        assert moment < until <= moment + timedelta(hours=26)
        assert quiet_until(someone, severity, until) is None
