"""The dispatcher's taking, grouping and delivery bookkeeping, on a real SQLite file with a clock
the test moves (no network, no sleeping)."""

from __future__ import annotations

import inspect
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from notify.compose import LISTED
from notify.dispatch import RETRY_CAP_S, RETRY_FIRST_S, Dispatcher
from notify.links import make_ack_token, verify_ack_token
from notify.outbox import SCHEMA_VERSION, OutboxError
from tests.notify_fixtures import (
    FakeClock,
    alert,
    config,
    open_dispatcher,
    person,
    route,
    send_all,
    who,
)

FARMER = person("farmer")
VET = person("vet")
FARM = config([FARMER, VET], [route("fever", "farm-7", (0, who("farmer", "vet")))])


def link(alert_id: str, name: str) -> str:
    return f"https://moclo.example/ack/{alert_id}-{name}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    return tmp_path / "notify" / "outbox.sqlite"


def test_nothing_is_sent_before_the_group_wait_then_one_message_per_person(
    outbox: Path, clock: FakeClock
) -> None:
    d = open_dispatcher(FARM, outbox, clock, ack_link=link)
    for n in range(3):
        d.take(alert(f"a{n}", device=f"cow-{n}"))
        clock.advance(2)
    assert d.due() == []
    assert d.next_wake() == pytest.approx(clock.now - 6 + 10)
    clock.advance(4)
    out = d.due()
    assert sorted(x.person for x in out) == ["farmer", "vet"]
    farmer = next(x for x in out if x.person == "farmer")
    assert farmer.title == "[warning] 3 cows with fever on farm-7"
    assert farmer.subject_ids == ("a0", "a1", "a2")
    assert farmer.id == f"{farmer.message_id}/0" and farmer.attempt == 1
    for n in range(3):
        assert f"- cow-{n} · fever · fever on cow-{n}" in farmer.body
    # One link per alert, so a tap acknowledges the alert it names and no other.
    assert farmer.body.splitlines()[-3:] == [
        f"Acknowledge cow-{n}: {link(f'a{n}', 'farmer')}" for n in range(3)
    ]
    assert "02:00 CET" in farmer.body  # the person's time zone


def test_without_an_ack_link_the_body_ends_with_the_list(outbox: Path, clock: FakeClock) -> None:
    d = open_dispatcher(FARM, outbox, clock)
    d.take(alert("a1", device="cow-1"))
    clock.advance(10)
    (farmer,) = [x for x in d.due() if x.person == "farmer"]
    assert farmer.title == "[warning] cow-1 fever on farm-7"
    assert farmer.body.splitlines()[-1].startswith("- cow-1 · fever")
    assert "Acknowledge" not in farmer.body


def test_a_change_taken_twice_is_notified_once_also_across_a_reopen(
    outbox: Path, clock: FakeClock
) -> None:
    d = open_dispatcher(FARM, outbox, clock)
    d.take(alert("a1"))
    d.take(alert("a1"))
    d.close()
    d = open_dispatcher(FARM, outbox, clock)
    d.take(alert("a1"))
    clock.advance(10)
    assert [x.subject_ids for x in send_all(d)] == [("a1",), ("a1",)]  # farmer and vet
    d.take(alert("a1"))  # ingest replaying after its restart
    clock.advance(60)
    assert d.due() == []
    assert d.next_wake() is None


def test_changes_taken_together_give_what_taking_them_one_by_one_gives(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The notifier takes what arrived together in one commit (a storm costs a few fsyncs,
    not one per alert: benchmarks/notify_storm.py); the messages are the same."""
    changes = [alert("a1"), alert("a2"), alert("a1"), alert("a3")]  # a1 twice: taken once
    apart = open_dispatcher(FARM, tmp_path / "apart.sqlite", clock)
    for change in changes:
        apart.take(change)
    together = open_dispatcher(FARM, tmp_path / "together.sqlite", clock)
    together.take_all(changes)
    clock.advance(10)
    one_by_one = [(x.person, x.subject_ids) for x in send_all(apart)]
    assert [(x.person, x.subject_ids) for x in send_all(together)] == one_by_one
    assert one_by_one and all(ids == ("a1", "a2", "a3") for _, ids in one_by_one)


def test_changes_after_the_group_closed_and_other_groups_are_separate_messages(
    outbox: Path, clock: FakeClock
) -> None:
    d = open_dispatcher(FARM, outbox, clock)
    d.take(alert("a1"))
    d.take(alert("c1", rule="calving", severity="info"))  # group_by (tenant, rule)
    clock.advance(10)
    first = send_all(d)
    assert sorted(x.subject_ids for x in first if x.person == "farmer") == [("a1",), ("c1",)]
    d.take(alert("a2"))
    clock.advance(10)
    assert [x.subject_ids for x in send_all(d) if x.person == "farmer"] == [("a2",)]


def test_a_sent_delivery_is_never_handed_out_again(outbox: Path, clock: FakeClock) -> None:
    d = open_dispatcher(FARM, outbox, clock)
    d.take(alert("a1"))
    clock.advance(10)
    sent = send_all(d)
    d.delivered(sent[0], ok=False, detail="late duplicate report")  # ignored: already sent
    d.close()
    d = open_dispatcher(FARM, outbox, clock)
    clock.advance(3600)
    assert d.due() == []


def test_claimed_but_unconfirmed_deliveries_are_due_again_after_a_reopen_with_the_same_id(
    outbox: Path, clock: FakeClock
) -> None:
    d = open_dispatcher(FARM, outbox, clock)
    d.take(alert("a1"))
    clock.advance(10)
    claimed = d.due()
    assert d.due() == []  # claimed: not handed out twice by one process
    d.close()  # "killed" before confirming
    d = open_dispatcher(FARM, outbox, clock)
    again = d.due()
    assert sorted(x.id for x in again) == sorted(x.id for x in claimed)
    assert {(x.title, x.body) for x in again} == {(x.title, x.body) for x in claimed}


def test_a_failure_is_retried_with_a_stored_capped_jittered_backoff(
    outbox: Path, clock: FakeClock
) -> None:
    cfg = config([FARMER], [route("fever", "farm-7", (0, who("farmer")))])
    d = open_dispatcher(cfg, outbox, clock, max_attempts=4, retry_first_s=10, retry_cap_s=25)
    d.take(alert("a1"))
    clock.advance(10)
    waits = []
    for attempt in (1, 2, 3):
        (x,) = d.due()
        assert x.attempt == attempt
        failed_at = clock.now
        d.delivered(x, ok=False, detail="HTTP 503")
        d.close()  # the back-off is in the file, not in memory
        d = open_dispatcher(cfg, outbox, clock, max_attempts=4, retry_first_s=10, retry_cap_s=25)
        wake = d.next_wake()
        assert wake is not None
        waits.append(wake - failed_at)
        clock.to(wake - 0.01)
        assert d.due() == []
        clock.to(wake)
    assert 5 <= waits[0] <= 10 and 10 <= waits[1] <= 20 and 12.5 <= waits[2] <= 25  # capped
    (x,) = d.due()
    d.delivered(x, ok=False, detail="HTTP 503")  # the 4th of 4
    clock.advance(3600)
    assert d.due() == []
    kinds = [e.event for e in d.events()]
    assert kinds.count("retrying") == 3 and kinds[-1] == "failed"
    assert "4 attempts failed: HTTP 503" in d.events()[-1].detail


def test_a_permanent_refusal_is_not_retried(outbox: Path, clock: FakeClock) -> None:
    d = open_dispatcher(FARM, outbox, clock)
    d.take(alert("a1"))
    clock.advance(10)
    for x in d.due():
        d.delivered(x, ok=x.person == "vet", detail="401 bad token", permanent=True)
    clock.advance(3600)
    assert d.due() == []
    last = {e.person: e for e in d.events() if e.event in ("sent", "failed")}
    assert last["farmer"].event == "failed" and "refused for good: 401" in last["farmer"].detail
    assert last["vet"].event == "sent"  # positive control


def test_a_failing_channel_does_not_delay_another_channel(outbox: Path, clock: FakeClock) -> None:
    two = person("farmer", channels=2)
    cfg = config([two], [route("fever", "farm-7", (0, who("farmer")))])
    d = open_dispatcher(cfg, outbox, clock, retry_first_s=120)
    d.take(alert("a1"))
    clock.advance(10)
    for x in d.due():  # channel 0 is dead, channel 1 works
        d.delivered(x, ok=x.id.endswith("/1"), detail="connection refused")
    d.take(alert("a2"))
    clock.advance(10)
    # a2's message is handed out for both channels when due, while a1's retry on channel 0
    # waits for its own time: nothing queues behind the dead channel.
    assert sorted((x.id[-2:], x.subject_ids) for x in d.due()) == [
        ("/0", ("a2",)),
        ("/1", ("a2",)),
    ]
    clock.advance(120)
    assert [(x.id[-2:], x.subject_ids, x.attempt) for x in d.due()] == [("/0", ("a1",), 2)]


def test_events_wait_in_the_outbox_until_stored(outbox: Path, clock: FakeClock) -> None:
    d = open_dispatcher(FARM, outbox, clock)
    d.take(alert("a1"))
    clock.advance(10)
    send_all(d)
    events = d.events()
    assert [e.event for e in events] == ["queued", "queued", "sent", "sent"]
    assert len({e.ts_ns for e in events}) == 4  # each its own InfluxDB point
    assert [e.ts_ns for e in events] == sorted(e.ts_ns for e in events)
    d.events_stored(events[:1])
    d.close()
    d = open_dispatcher(FARM, outbox, clock)
    assert d.events() == events[1:]
    assert d.events(limit=1) == events[1:2]
    d.events_stored(events[1:])
    assert d.events() == []


def test_the_outbox_holds_no_channel_url_and_is_private(outbox: Path, clock: FakeClock) -> None:
    d = open_dispatcher(FARM, outbox, clock)
    d.take(alert("a1"))
    clock.advance(10)
    for x in d.due():
        d.delivered(x, ok=False, detail=f"cannot reach {x.channel.url}")
    d.close()
    # What someone reading the file (and its WAL) would find: the shown form, not the token.
    found = b"".join(p.read_bytes() for p in outbox.parent.iterdir())
    assert b"SECRET-" not in found
    assert b"json://localhost" in found  # positive control: the shown form is kept
    assert stat.S_IMODE(os.stat(outbox).st_mode) == 0o600


def test_a_newer_outbox_is_refused_with_what_to_do(outbox: Path, clock: FakeClock) -> None:
    open_dispatcher(FARM, outbox, clock).close()
    with sqlite3.connect(outbox) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(OutboxError, match=r"newer than this moclo.s.*move the file away"):
        Dispatcher(FARM, outbox, clock=clock)


def test_a_person_who_left_the_file_is_not_sent_to(outbox: Path, clock: FakeClock) -> None:
    d = open_dispatcher(FARM, outbox, clock)
    d.take(alert("a1"))
    d.reload(config([FARMER], [route("fever", "farm-7", (0, who("farmer")))]))
    clock.advance(10)
    assert [x.person for x in d.due()] == ["farmer"]


def test_the_guarantees_page_states_the_numbers_the_code_uses(repo_root: Path) -> None:
    page = " ".join((repo_root / "docs" / "notifications.md").read_text().split())
    assert "## Delivery guarantees" in page
    first, cap = f"{RETRY_FIRST_S:g} s", f"{RETRY_CAP_S / 60:g} minutes"
    assert f"doubles from {first} up to {cap}" in page
    attempts = inspect.signature(Dispatcher).parameters["max_attempts"].default
    assert f"After {attempts} attempts" in page
    assert f"shows the first {LISTED} changes" in page


def test_a_person_of_another_tenant_is_never_told_even_if_a_route_names_them(
    outbox: Path, clock: FakeClock
) -> None:
    """The notify file refuses such a route; a config built otherwise is held to it too."""
    stranger = person("stranger", "farm-8")
    cfg = config([FARMER, stranger], [route("fever", "farm-7", (0, who("farmer", "stranger")))])
    d = open_dispatcher(cfg, outbox, clock)
    d.take(alert("a1"))
    clock.advance(10)
    assert [x.person for x in d.due()] == ["farmer"]


def test_a_second_notifier_on_one_outbox_is_refused_saying_what_to_do(
    outbox: Path, clock: FakeClock
) -> None:
    first = open_dispatcher(FARM, outbox, clock)
    with pytest.raises(OutboxError, match=r"another notifier is using .* one `moclo notify run`"):
        open_dispatcher(FARM, outbox, clock)
    first.close()
    open_dispatcher(FARM, outbox, clock).close()  # positive control: free once closed


def test_each_persons_links_acknowledge_as_that_person_and_only_the_alert_named(
    outbox: Path, clock: FakeClock
) -> None:
    secret = b"link-secret"

    def signed(alert_id: str, name: str) -> str:
        token = make_ack_token(secret, alert_id, name, expires=int(clock.now) + 86400)
        return f"https://moclo.example/ack/{token}"

    d = open_dispatcher(FARM, outbox, clock, ack_link=signed)
    d.take(alert("a1", device="cow-1"))
    d.take(alert("a2", device="cow-2"))
    clock.advance(10)
    for x in d.due():
        links = [line.rsplit("/ack/", 1)[1] for line in x.body.splitlines() if "/ack/" in line]
        named = [verify_ack_token(secret, t, now=clock.now) for t in links]
        assert [(n.alert_id, n.person) for n in named] == [("a1", x.person), ("a2", x.person)]
