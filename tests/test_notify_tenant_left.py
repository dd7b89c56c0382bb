"""A person who no longer serves a tenant (the notify file reloaded without it in their
`tenants`) is told nothing more of that tenant's alerts: no reminder, no held message released
at the end of their quiet hours, no retry of a message already queued, no resolution. The
routes already cannot name them; these are what the outbox owed them from before the reload.
Each case has the farmer, who still serves the farm, as its positive control. On a real SQLite
outbox with a clock the test moves."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from notify.dispatch import Delivery
from notify.model import NotifyConfig
from tests.notify_fixtures import (
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

MORNING = datetime(2026, 12, 7, 7, 0, tzinfo=ZoneInfo("Europe/Amsterdam")).timestamp()
FARMER = person("farmer")


def farm(vet_tenant: str = "farm-7", *, quiet: bool = False, **options: float) -> NotifyConfig:
    vet = person("vet", vet_tenant, quiet=QUIET_NIGHTS if quiet else ())
    # A route naming the vet is only valid while she serves the farm: after she leaves it,
    # the route names the farmer alone, as a notify file that passes the check would.
    targets = who("farmer", "vet") if vet_tenant == "farm-7" else who("farmer")
    return config([FARMER, vet], [route("fever", "farm-7", (0, targets), **options)])


def people(deliveries: list[Delivery]) -> list[str]:
    return sorted(x.person for x in deliveries)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_no_reminder_after_she_stops_serving_the_tenant(tmp_path: Path, clock: FakeClock) -> None:
    d = open_dispatcher(farm(repeat_s=3600.0), tmp_path / "outbox.sqlite", clock)
    d.take(alert("a1"))
    clock.advance(10)
    assert people(send_all(d)) == ["farmer", "vet"]
    d.reload(farm("farm-8", repeat_s=3600.0))
    clock.advance(3600)
    assert people(send_all(d)) == ["farmer"], "a reminder reached the vet who left farm-7"


def test_no_resolution_after_she_stops_serving_the_tenant(tmp_path: Path, clock: FakeClock) -> None:
    d = open_dispatcher(farm(), tmp_path / "outbox.sqlite", clock)
    d.take(alert("a1"))
    clock.advance(10)
    assert people(send_all(d)) == ["farmer", "vet"]
    d.reload(farm("farm-8"))
    d.take(alert("a1", "resolved"))
    clock.advance(10)
    assert people(send_all(d)) == ["farmer"], "the resolution reached the vet who left farm-7"


def test_a_held_message_is_not_released_to_her_and_the_timeline_says_why(
    tmp_path: Path, clock: FakeClock
) -> None:
    d = open_dispatcher(farm(quiet=True), tmp_path / "outbox.sqlite", clock)
    d.take(alert("a1"))
    clock.advance(10)
    assert people(send_all(d)) == ["farmer"]  # the vet's is held for her quiet hours
    d.reload(farm("farm-8", quiet=True))
    clock.to(MORNING)
    assert d.due() == [], "the held message reached the vet who left farm-7"
    (dropped,) = [e for e in d.events() if e.person == "vet" and e.event != "held"]
    assert dropped.event == "failed"
    assert dropped.detail == "held and not sent: vet no longer serves farm-7"


def test_a_queued_retry_is_not_sent_to_her(tmp_path: Path, clock: FakeClock) -> None:
    d = open_dispatcher(farm(), tmp_path / "outbox.sqlite", clock)
    d.take(alert("a1"))
    clock.advance(10)
    assert people(send_all(d, ok=False)) == ["farmer", "vet"]  # both channels down
    d.reload(farm("farm-8"))
    clock.advance(3600)
    assert people(send_all(d)) == ["farmer"], "a retry reached the vet who left farm-7"
    (failed,) = [e for e in d.events() if e.person == "vet" and e.event == "failed"]
    assert failed.detail == "vet no longer serves farm-7"


def test_she_is_told_again_once_she_serves_the_tenant_again(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The check is of the file in force, not a mark left on her: put back, she is reminded."""
    d = open_dispatcher(farm(repeat_s=3600.0), tmp_path / "outbox.sqlite", clock)
    d.take(alert("a1"))
    clock.advance(10)
    send_all(d)
    d.reload(farm("farm-8", repeat_s=3600.0))
    d.reload(farm(repeat_s=3600.0))
    clock.advance(3600)
    assert people(send_all(d)) == ["farmer", "vet"]
