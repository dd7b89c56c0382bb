"""An alert's notification timeline (`GET /api/alerts/{id}/timeline` and the alert's page),
against a real broker, database, ingest and `moclo serve`: the events are written to
`moclo_notifications` as the notifier writes them (storage/notifications.py), for a fever
ingest really raised. Tenant scoping is tried from the attacker's side: a token of the clinic
gets the same 404 for the farm's alert as for no alert at all, with the farm's own token as the
positive control; a channel URL that slipped into a row is not shown."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from core.settings import Settings
from storage.notifications import Event, NotificationEvent
from tests.conftest import RunningIngest, RunningServe
from tests.helpers import wait_until
from tests.test_dashboard import browser, page  # noqa: F401 (fixtures)
from tests.test_dashboard_phone import IMAGES, OVERFLOW, phone, sign_in_by_touch  # noqa: F401
from tests.test_serve import cow_history

LEAKY_CHANNEL = "json://hook-user:s3cret-pass@hooks.example.org/in?token=t0ken"


def fevered(settings: Settings, ingest: RunningIngest, serve: RunningServe) -> str:
    """cow-1 of the farm raises `fever` through ingest; its id once stored."""
    cow_history(settings, "farm", "cow-1", [38.6] * 4 + [40.1] * 3)
    with serve.client(serve.admin_token) as admin:
        alerts = wait_until(
            lambda: admin.get("/api/alerts", params={"tenant": "farm"}).json()["alerts"],
            what="the fever stored",
        )
    return str(alerts[0]["id"])


def story(alert_id: str) -> list[NotificationEvent]:
    """The night of the fever, as the notifier would store it (each event at its own time, as
    the notifier's writer keeps them)."""
    start = time.time_ns() - 11 * 60 * 10**9  # just after the fever was raised

    def at(minutes: int, event: Event, **fields: str | int) -> NotificationEvent:
        return NotificationEvent(
            tenant="farm", event=event, alert_id=alert_id, ts_ns=start + minutes * 60 * 10**9,
            device_id="cow-1", rule="fever", **fields,  # type: ignore[arg-type]
        )  # fmt: skip

    return [
        at(0, "queued", person="farmer-jo", channel="jo's phone", level=1, message_id="m1"),
        at(1, "held", person="farmer-jo", channel="jo's phone", level=1,
           detail="quiet until 06:00"),
        at(2, "failed", person="vet-ana", channel=LEAKY_CHANNEL, level=1, message_id="m2",
           detail=f"{LEAKY_CHANNEL} answered 500"),
        at(10, "escalated", person="vet-ben", level=2),
        at(11, "sent", person="vet-ben", channel="ben mail", level=2, message_id="m3"),
    ]  # fmt: skip


def write(settings: Settings, events: list[NotificationEvent]) -> None:
    # Plain HTTP: the Influx helper runs an event loop, which Playwright's sync API forbids.
    lines = "\n".join(e.to_line() for e in events)
    url = f"{settings.influx_url}/write"
    answer = httpx.post(url, params={"db": settings.influx_db}, content=lines, timeout=10)
    assert answer.status_code == 204, answer.text


def test_the_timeline_is_the_alerts_own_within_the_tokens_tenants(
    settings: Settings, ingest: RunningIngest, serve: RunningServe
) -> None:
    alert_id = fevered(settings, ingest, serve)
    other = "0123456789ab"  # another alert's rows must not show up in this one's timeline
    write(settings, [*story(alert_id), *story(other)])
    farm = serve.token(["farm"], role="viewer", name="farm-viewer")
    with serve.client(farm) as client:
        answer = client.get(f"/api/alerts/{alert_id}/timeline")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["alert"]["id"] == alert_id and body["alert"]["state"] == "raised"
    assert (body["alert"]["rule"], body["alert"]["device_id"]) == ("fever", "cow-1")
    shown = [(e["event"], e["person"], e["channel"], e["level"]) for e in body["events"]]
    assert shown == [
        ("queued", "farmer-jo", "jo's phone", 1),
        ("held", "farmer-jo", "jo's phone", 1),
        ("failed", "vet-ana", "json://hooks.example.org", 1),
        ("escalated", "vet-ben", "", 2),
        ("sent", "vet-ben", "ben mail", 2),
    ]
    assert body["events"][1]["detail"] == "quiet until 06:00"
    assert body["events"][2]["detail"] == "json://hooks.example.org answered 500"
    for secret in ("s3cret", "t0ken", "hook-user"):
        assert secret not in answer.text

    # The clinic's token: the farm's alert is as unknown as an alert that never was.
    clinic = serve.token(["clinic"], role="admin", name="clinic-admin")
    with serve.client(clinic) as client:
        theirs = client.get(f"/api/alerts/{alert_id}/timeline")
        nothing = client.get("/api/alerts/ffffffffffff/timeline")
    assert theirs.status_code == nothing.status_code == 404
    assert theirs.json()["error"].replace(alert_id, "X") == nothing.json()["error"].replace(
        "ffffffffffff", "X"
    )
    assert "farm" not in theirs.text and "vet" not in theirs.text


@pytest.mark.parametrize(
    ("path", "token", "status"),
    [
        pytest.param("/api/alerts/not-an-id/timeline", True, 400, id="malformed-id"),
        pytest.param("/api/alerts/0123456789ab/timeline", False, 401, id="no-token"),
    ],
)
def test_a_timeline_asked_wrongly_says_what_is_wrong(
    serve: RunningServe, path: str, token: bool, status: int
) -> None:
    headers = {"Authorization": f"Bearer {serve.admin_token}"} if token else {}
    answer = httpx.get(serve.url + path, headers=headers, timeout=10)
    assert answer.status_code == status
    assert answer.json()["error"]


def test_on_a_phone_an_alerts_page_shows_who_was_told_and_one_tap_acknowledges(
    phone: Page,  # noqa: F811
    settings: Settings,
    ingest: RunningIngest,
    serve: RunningServe,
    tmp_path: Path,
) -> None:
    alert_id = fevered(settings, ingest, serve)
    write(settings, story(alert_id))
    sign_in_by_touch(phone, serve, serve.token(["farm"], role="operator", name="vet-ben"))
    phone.locator(f'#open-alerts li[data-alert-id="{alert_id}"] a.alert-link').tap()
    timeline = phone.locator("#timeline")
    expect(timeline).to_have_attribute("data-shown", f"{alert_id}/raised/5")
    expect(phone.locator("#alert-title")).to_contain_text("fever on farm/cow-1")
    expect(timeline.locator('li[data-event="failed"]')).to_contain_text(
        "via json://hooks.example.org"
    )
    expect(timeline.locator('li[data-event="held"]')).to_contain_text("quiet until 06:00")
    expect(timeline).not_to_contain_text("s3cret")
    # The alert's page comes before the open alerts on a phone, and fits the screen.
    view, alerts = (
        phone.locator("#alert-view").bounding_box(),
        phone.locator("#open-panel").bounding_box(),
    )
    assert view is not None and alerts is not None and view["y"] < alerts["y"]
    assert phone.evaluate(OVERFLOW) == []
    if os.environ.get("MOCLO_UPDATE_SCREENSHOTS") == "1":
        phone.screenshot(path=str(tmp_path / "phone-timeline.png"))
        shutil.copy(tmp_path / "phone-timeline.png", IMAGES / "phone-timeline.png")

    phone.locator("#alert-actions button.ack").tap()
    expect(timeline).to_have_attribute("data-shown", f"{alert_id}/acknowledged/5", timeout=15_000)
    expect(phone.locator("#alert-facts")).to_contain_text("acknowledged by vet-ben")
    expect(phone.locator("#alert-actions button.ack")).to_have_count(0)
