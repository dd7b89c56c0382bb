"""Escalation, acknowledgement, repeats and quiet hours in the dispatcher, on a real SQLite file
with a clock the test moves; the pacemaker scenario with a reopen between every step."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from notify.dispatch import Delivery, Dispatcher
from notify.model import NotifyConfig, Rotation, Subject, SubjectState
from tests.notify_fixtures import (
    NIGHT,
    QUIET_NIGHTS,
    FakeClock,
    alert,
    config,
    open_dispatcher,
    person,
    route,
    send_all,
    who,
)

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
MORNING = datetime(2026, 12, 7, 7, 0, tzinfo=AMSTERDAM).timestamp()  # the quiet hours end

FARMER, VET, NEIGHBOUR = person("farmer"), person("vet"), person("neighbour")


def escalating(**options: Any) -> NotifyConfig:
    steps = ((0, who("farmer")), (600, who("vet")), (1200, who("neighbour")))
    return config([FARMER, VET, NEIGHBOUR], [route("fever", "farm-7", *steps, **options)])


def people(deliveries: list[Delivery]) -> list[str]:
    return sorted(x.person for x in deliveries)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    return tmp_path / "outbox.sqlite"


def test_each_step_is_told_at_its_time_after_the_first_message_until_acknowledged(
    outbox: Path, clock: FakeClock
) -> None:
    d = open_dispatcher(escalating(), outbox, clock)
    d.take(alert("a1"))
    clock.advance(10)
    assert people(send_all(d)) == ["farmer"]
    clock.advance(599)
    assert d.due() == []
    clock.advance(1)  # 600 s after the first message
    (vet,) = send_all(d)
    assert vet.person == "vet" and vet.level == 2
    assert vet.title.startswith("[warning] Not acknowledged yet: ")
    assert vet.body.startswith("Escalation level 2: nobody has acknowledged these yet.")
    d.take(alert("a1", "acknowledged", by="vet"))
    clock.advance(10)  # the acknowledgement, grouped, to those told of the raise
    acks = send_all(d)
    assert people(acks) == ["farmer", "vet"]
    assert all(x.title.startswith("[warning] Acknowledged: ") for x in acks)
    assert "(by vet)" in acks[0].body and "Acknowledge " not in acks[0].body
    clock.advance(3600)
    assert d.due() == [] and d.next_wake() is None  # the neighbour is never told
    stopped = [e for e in d.events() if e.event == "acknowledged"]
    assert [(e.alert_id, e.level, e.detail) for e in stopped] == [
        ("a1", 2, "acknowledged by vet: escalation stopped")
    ]
    escalated = [e for e in d.events() if e.event == "escalated"]
    assert [(e.alert_id, e.level) for e in escalated] == [("a1", 2)]


def test_acknowledged_before_the_group_closed_tells_nobody(outbox: Path, clock: FakeClock) -> None:
    d = open_dispatcher(escalating(), outbox, clock)
    d.take(alert("a1"))
    d.take(alert("a2"))
    d.take(alert("a1", "acknowledged", by="farmer"))
    clock.advance(10)
    (farmer,) = send_all(d)
    assert farmer.subject_ids == ("a2",)  # a1 was acknowledged before anyone was told
    clock.advance(600)
    assert [x.subject_ids for x in send_all(d)] == [("a2",)]  # only a2 escalates


def test_resolved_tells_those_told_only_when_the_route_says_so(
    outbox: Path, clock: FakeClock
) -> None:
    for resolved, expected in ((True, ["farmer"]), (False, [])):
        clock = FakeClock()
        d = open_dispatcher(
            escalating(resolved=resolved), outbox.with_suffix(f".{resolved}"), clock
        )
        d.take(alert("a1"))
        clock.advance(10)
        send_all(d)
        d.take(alert("a1", "resolved"))
        clock.advance(10)
        told = send_all(d)
        assert people(told) == expected
        assert all(x.title.startswith("[warning] Resolved: ") for x in told)
        clock.advance(3600)
        assert d.due() == []


def test_repeat_tells_everyone_told_again_while_open_and_not_after(
    outbox: Path, clock: FakeClock
) -> None:
    cfg = config(
        [FARMER, VET],
        [route("fever", "farm-7", (0, who("farmer")), (600, who("vet")), repeat_s=3600.0)],
    )
    d = open_dispatcher(cfg, outbox, clock)
    d.take(alert("a1"))
    clock.advance(10)
    send_all(d)
    clock.advance(600)
    send_all(d)
    clock.advance(3000)  # an hour after the first message
    again = send_all(d)
    assert people(again) == ["farmer", "vet"]
    assert all(x.title.startswith("[warning] Still open: ") for x in again)
    clock.advance(5 * 3600)  # the notifier was stopped for hours: one reminder, not five
    assert people(send_all(d)) == ["farmer", "vet"]
    d.take(alert("a1", "acknowledged", by="farmer"))
    clock.advance(10)
    send_all(d)  # the acknowledgement itself
    clock.advance(10 * 3600)
    assert d.due() == []
    assert [e.event for e in d.events()].count("repeated") == 2


def test_quiet_hours_hold_a_message_until_they_end_then_send_it_if_still_open(
    outbox: Path, clock: FakeClock
) -> None:
    sleeper = person("farmer", quiet=QUIET_NIGHTS)
    cfg = config([sleeper], [route("fever", "farm-7", (0, who("farmer")))])
    d = open_dispatcher(cfg, outbox, clock)
    d.take(alert("a1"))
    d.take(alert("a2", rule="calving", severity="critical"))  # breaks through
    clock.advance(10)
    assert [x.subject_ids for x in send_all(d)] == [("a2",)]
    (held,) = [e for e in d.events() if e.event == "held"]
    assert held.alert_id == "a1" and "until 2026-12-07 07:00 CET" in held.detail
    assert d.next_wake() == MORNING
    clock.to(MORNING - 1)
    assert d.due() == []
    clock.to(MORNING)
    (morning,) = send_all(d)
    assert morning.subject_ids == ("a1",) and morning.message_id == held.message_id


def test_a_held_message_whose_alert_was_acknowledged_is_dropped_saying_why(
    outbox: Path, clock: FakeClock
) -> None:
    sleeper = person("farmer", quiet=QUIET_NIGHTS)
    cfg = config([sleeper, VET], [route("fever", "farm-7", (0, who("farmer", "vet")))])
    d = open_dispatcher(cfg, outbox, clock)
    d.take(alert("a1"))
    clock.advance(10)
    assert people(send_all(d)) == ["vet"]
    d.take(alert("a1", "acknowledged", by="vet"))
    clock.advance(10)
    assert people(send_all(d)) == ["vet"]  # the farmer was never told: no acknowledgement
    clock.to(MORNING)
    assert d.due() == [] and d.next_wake() is None
    (dropped,) = [e for e in d.events() if e.event == "acknowledged" and e.person == "farmer"]
    assert dropped.detail == "held in quiet hours and not sent: acknowledged before they ended"


def test_escalation_does_not_wait_for_a_held_person(outbox: Path, clock: FakeClock) -> None:
    sleeper = person("farmer", quiet=QUIET_NIGHTS)
    cfg = config([sleeper, VET], [route("fever", "farm-7", (0, who("farmer")), (60, who("vet")))])
    d = open_dispatcher(cfg, outbox, clock)
    d.take(alert("a1"))
    clock.advance(10)
    assert d.due() == []  # held
    clock.advance(60)
    assert people(send_all(d)) == ["vet"]


CARDIOLOGY = "cardiology"


def ward() -> NotifyConfig:
    jansen = person("dr-jansen", CARDIOLOGY, quiet=QUIET_NIGHTS)
    bakker, visser = person("dr-bakker", CARDIOLOGY), person("dr-visser", CARDIOLOGY)
    nurses = person("ward", CARDIOLOGY)
    rotation = Rotation(
        name="cardiology",
        tenant=CARDIOLOGY,
        people=("dr-bakker", "dr-visser", "dr-jansen"),
        handoff=datetime(2026, 11, 30, 8, 0, tzinfo=AMSTERDAM),  # Mondays 08:00
        time_zone="Europe/Amsterdam",
    )
    steps = (
        (0, who("dr-jansen", "oncall:cardiology")),  # the patient's own cardiologist, on call
        (600, who("oncall:cardiology#2")),
        (1200, who("ward")),
    )
    pacemakers = route("pacemakers", CARDIOLOGY, *steps, device_types=("pacemaker",))
    return config([jansen, bakker, visser, nurses], [pacemakers], [rotation])


def battery(state: SubjectState = "raised", by: str = "") -> Subject:
    return alert(
        "pm17-battery", state, device="pm-17", tenant=CARDIOLOGY, device_type="pacemaker",
        rule="battery_low", severity="warning", ts=NIGHT, by=by,
    )  # fmt: skip


def test_pacemaker_battery_at_night_reopened_between_every_step(
    outbox: Path, clock: FakeClock
) -> None:
    cfg = ward()
    d = open_dispatcher(cfg, outbox, clock, ack_link=lambda a, p: f"https://h/ack/{a}/{p}")

    def reopen() -> Dispatcher:
        """A restart: whatever was owed is owed again, and nothing twice."""
        wake = d.next_wake()
        d.close()
        again = open_dispatcher(cfg, outbox, clock, ack_link=lambda a, p: f"https://h/ack/{a}/{p}")
        assert again.due() == [] and again.next_wake() == wake
        return again

    d.take(battery())
    d = reopen()
    d.take(battery())  # ingest's replay after the restart
    clock.advance(10)  # the group wait: dr-jansen is asleep, dr-bakker is on call
    (oncall,) = send_all(d)
    assert oncall.person == "dr-bakker" and oncall.level == 1
    assert oncall.title == "[warning] pm-17 battery low on cardiology"
    assert oncall.body.endswith("Acknowledge pm-17: https://h/ack/pm17-battery/dr-bakker")
    assert [(e.person, e.event) for e in d.events() if e.event == "held"] == [("dr-jansen", "held")]
    d = reopen()
    clock.advance(599)
    assert d.due() == []
    clock.advance(1)  # no acknowledgement in 10 minutes: the second in line
    (second,) = send_all(d)
    assert (second.person, second.level) == ("dr-visser", 2)
    d = reopen()
    d.take(battery("acknowledged", by="dr-visser"))
    d = reopen()
    clock.advance(10)
    assert people(send_all(d)) == ["dr-bakker", "dr-visser"]  # "acknowledged by dr-visser"
    d = reopen()
    clock.to(MORNING)  # the ward is never told; dr-jansen's held message is dropped
    assert d.due() == [] and d.next_wake() is None
    timeline = [(e.event, e.person, e.level) for e in d.events() if e.event != "queued"]
    assert timeline == [
        ("held", "dr-jansen", 1),
        ("sent", "dr-bakker", 1),
        ("escalated", "", 2),
        ("sent", "dr-visser", 2),
        ("acknowledged", "", 2),
        ("sent", "dr-bakker", 0),
        ("sent", "dr-visser", 0),
        ("acknowledged", "dr-jansen", 0),
    ]
