"""The phone dashboard from the side of the next person holding the phone, in a real headless
Chromium (its service worker included) against a real broker, database, ingest and `moclo
serve`: what the worker keeps for offline must be the signed-in person's alone, and nothing of
it once they signed out, even an answer that was on its way when they did."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from core.settings import Settings
from query.fleet import list_devices
from storage.influx import InfluxClient
from tests.conftest import RunningIngest, RunningServe
from tests.gateway_helpers import ScriptedDevice
from tests.helpers import wait_until
from tests.test_dashboard import browser  # noqa: F401 (a fixture)
from tests.test_dashboard_phone import phone, sign_in_by_touch  # noqa: F401 (a fixture)
from tests.test_serve import NOW, cow_history
from tests.test_serve_commands import car, gateway  # noqa: F401 (gateway: a fixture)

FARM_DEVICES = "/api/devices?tenant=farm&type=cow_tracker"
# What the page's own fetch of `url` gets: the status, or "failed" when nothing answers (offline
# and nothing saved). Through the service worker, as every fetch of the page.
FETCH = """async (url) => {
    try { return String((await fetch(url)).status); } catch { return "failed"; }
}"""
# The URLs of the answers the service worker keeps for offline.
SAVED = """async () => {
    if (!(await caches.has("moclo-answers"))) return [];
    return (await (await caches.open("moclo-answers")).keys()).map((r) => r.url);
}"""


@pytest.fixture
def slow_farm_query(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Serve's query for FARM_DEVICES held before it goes to the (real) database, as a slow
    database would hold its answer: the first event is set once serve checked the session and
    is about to ask, the second lets it go on. The session check, the database and the page's
    other requests are untouched."""
    asked, go_on = threading.Event(), threading.Event()

    async def held(client: InfluxClient, **where: Any) -> Any:
        if where.get("device_type") == "cow_tracker":
            asked.set()
            await asyncio.to_thread(go_on.wait, 30)
        return await list_devices(client, **where)

    monkeypatch.setattr("serve.routes.devices.list_devices", held)
    yield asked, go_on
    go_on.set()


def test_an_answer_on_its_way_at_sign_out_is_not_kept_for_the_next_person(
    phone: Page,  # noqa: F811
    ingest: RunningIngest,
    serve: RunningServe,
    slow_farm_query: tuple[threading.Event, threading.Event],
) -> None:
    cow_history(serve.settings, "farm", "cow-1", [38.6] * 6)
    wait_until(lambda: ingest.stats.readings_stored >= 6, what="cow-1 stored")
    sign_in_by_touch(phone, serve, serve.token(["farm"], role="viewer", name="farmer-jo"))
    phone.wait_for_function("navigator.serviceWorker.controller !== null", timeout=10_000)
    asked, go_on = slow_farm_query
    # The farmer's page asks for the farm's cows; the database is slow to answer.
    phone.evaluate("(url) => { window.late = fetch(url); }", FARM_DEVICES)
    wait_until(asked.is_set, what="serve asking the database, the session checked")
    # Meanwhile the farmer signs out, and hands the phone on.
    phone.locator("#sign-out").tap()
    expect(phone.locator("#sign-in")).to_be_visible()
    assert phone.evaluate(SAVED) == []
    go_on.set()
    assert phone.evaluate("async () => (await window.late).status") == 200  # it did arrive
    assert phone.evaluate(SAVED) == [], "an answer kept after signing out"

    # The next person, of another tenant: online the farm is refused (the positive control),
    # offline nothing of it may come from the phone's saved answers.
    phone.locator("#token").fill(serve.token(["dairy"], role="viewer", name="dairy-max"))
    phone.locator("#sign-in-button").tap()  # on the sign-in screen the farmer left
    expect(phone.locator("#who-name")).to_have_text("dairy-max")
    assert phone.evaluate(FETCH, FARM_DEVICES) == "403"
    phone.context.set_offline(True)
    assert phone.evaluate(FETCH, FARM_DEVICES) == "failed"


@pytest.fixture
def two_fevers(ingest: RunningIngest, serve: RunningServe) -> RunningServe:
    """Two cows of the farm with a raised fever each: cow-2's raised before cow-3's."""
    for n, (cow, end) in enumerate((("cow-2", NOW - 600), ("cow-3", NOW)), start=1):
        cow_history(serve.settings, "farm", cow, [38.6] * 3 + [40.1] * 3, end=end)
        # Stored, not only raised: ingest announces an alert before it writes the batch, and
        # the page loads its first view from InfluxDB.
        wait_until(
            lambda c=cow, n=n: (  # type: ignore[misc]
                any(a.device_id == c for a in ingest.alerts)
                and ingest.stats.readings_stored == 6 * n
            ),
            what=f"{cow}'s fever raised and stored",
        )
    return serve


def acknowledging(tab: Page) -> list[str]:
    """The alerts the page asks to acknowledge, by id, as it asks (a request seen at the page)."""
    asked: list[str] = []
    tab.on(
        "request",
        lambda r: (
            asked.append(r.url.split("/api/alerts/")[1].split("/")[0])
            if r.method == "POST" and r.url.endswith("/ack")
            else None
        ),
    )
    return asked


def ack_button(tab: Page, device: str) -> tuple[float, float]:
    """The middle of `device`'s acknowledge button, once it is on screen: a live update may be
    redrawing the list at the moment of asking (bounding_box is then None)."""
    button = tab.locator(f'#open-alerts li[data-device="{device}"] button.ack')
    box = wait_until(button.bounding_box, timeout_s=15, what=f"{device}'s acknowledge button")
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


# True once the page has not scrolled between two animation frames.
STANDING_STILL = """() => new Promise((done) => {
  const y = scrollY;
  requestAnimationFrame(() => requestAnimationFrame(() => done(scrollY === y)));
})"""


def alert_id(tab: Page, device: str) -> str:
    found = tab.locator(f'#open-alerts li[data-device="{device}"]').get_attribute("data-alert-id")
    assert found is not None
    return found


def test_a_swipe_starting_on_acknowledge_scrolls_and_acknowledges_nothing(
    phone: Page,  # noqa: F811
    two_fevers: RunningServe,
) -> None:
    asked = acknowledging(phone)
    sign_in_by_touch(phone, two_fevers, two_fevers.token(["farm"], role="operator", name="vet-ana"))
    expect(phone.locator("#open-alerts button.ack")).to_have_count(2, timeout=10_000)
    x, y = ack_button(phone, "cow-2")
    cdp = phone.context.new_cdp_session(phone)
    # A finger put down on the button and drawn up the screen, as a thumb scrolls.
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
    for step in range(1, 11):
        point = {"x": x, "y": y - 25 * step}
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    assert phone.evaluate("scrollY") > 0  # it scrolled the page
    # The swipe may leave the page gliding on; a tap then only stops the glide (as on a
    # phone), and on a busy machine the glide lasts long enough for the tap below to land in
    # it: wait until the page stands still for two frames.
    phone.wait_for_function(STANDING_STILL, timeout=15_000)
    # Positive control: a tap on cow-3's button acknowledges cow-3, and only that was asked.
    cow_3 = alert_id(phone, "cow-3")
    phone.locator('#open-alerts li[data-device="cow-3"] button.ack').tap()
    expect(phone.locator('#open-alerts li[data-device="cow-3"]')).to_have_attribute(
        "data-state", "acknowledged", timeout=15_000
    )
    assert asked == [cow_3]
    expect(phone.locator('#open-alerts li[data-device="cow-2"]')).to_have_attribute(
        "data-state", "raised"
    )


def test_a_tap_whose_alert_moved_away_under_the_finger_acknowledges_nothing(
    phone: Page,  # noqa: F811
    two_fevers: RunningServe,
) -> None:
    """The list is redrawn when an alert changes: a new one sorted above pushes the others
    down while a finger is on a button, and the button under it at release is another alert's."""
    asked = acknowledging(phone)
    sign_in_by_touch(phone, two_fevers, two_fevers.token(["farm"], role="operator", name="vet-ana"))
    expect(phone.locator("#open-alerts button.ack")).to_have_count(2, timeout=10_000)
    aimed = alert_id(phone, "cow-2")  # the older: second in the list
    x, y = ack_button(phone, "cow-2")
    cdp = phone.context.new_cdp_session(phone)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
    # A critical alert of another cow arrives on the live stream meanwhile (as the stream
    # hands it to the page), and goes to the top.
    phone.evaluate(
        """() => onAlert({ id: "f".repeat(32), tenant: "farm", device_id: "cow-9",
            device_type: "cow_tracker", rule: "fever", severity: "critical", state: "raised",
            message: "body temperature 41.0", ts: new Date().toISOString(),
            first_seen: new Date().toISOString() })"""
    )
    expect(phone.locator("#open-alerts li").first).to_have_attribute("data-device", "cow-9")
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    # Positive control: a tap now, on cow-2's button where it is, acknowledges cow-2.
    phone.locator('#open-alerts li[data-device="cow-2"] button.ack').tap()
    expect(phone.locator('#open-alerts li[data-device="cow-2"]')).to_have_attribute(
        "data-state", "acknowledged", timeout=15_000
    )
    assert asked == [aimed]


def test_signing_out_offline_forgets_now_and_ends_the_session_once_online(
    phone: Page,  # noqa: F811
    ingest: RunningIngest,
    serve: RunningServe,
) -> None:
    """The session's cookie is out of the page's reach: signed out offline, the next person
    opening the page online must not find the farmer still signed in."""
    cow_history(serve.settings, "farm", "cow-1", [38.6] * 6)
    wait_until(lambda: ingest.stats.readings_stored >= 6, what="cow-1 stored")
    sign_in_by_touch(phone, serve, serve.token(["farm"], role="viewer", name="farmer-jo"))
    phone.wait_for_function("navigator.serviceWorker.controller !== null", timeout=10_000)
    phone.reload()  # positive control: the cookie signs the page in again, online
    expect(phone.locator("#who-name")).to_have_text("farmer-jo", timeout=10_000)
    phone.context.set_offline(True)
    phone.locator("#sign-out").tap()
    expect(phone.locator("#sign-in")).to_be_visible()
    expect(phone.locator("#sign-in-error")).to_contain_text("while offline")
    assert phone.evaluate(SAVED) == []
    phone.context.set_offline(False)
    phone.reload()  # the next person, online
    expect(phone.locator("#sign-in")).to_be_visible(timeout=10_000)
    expect(phone.locator("#app")).to_be_hidden()


HOSTILE = '<img src="/x" onerror="document.title=\'owned\'">the door is open'


def test_a_devices_hostile_answer_is_shown_as_text(
    phone: Page,  # noqa: F811
    gateway: Settings,  # noqa: F811
    ingest: RunningIngest,
    serve: RunningServe,
) -> None:
    """A command's reason is the device's own text: markup in it is shown, never run (the
    guarded page also fails on a Content-Security-Policy violation)."""
    car(gateway, "home", "car-1")
    wait_until(lambda: ingest.stats.readings_stored >= 1, what="car-1 stored")
    device = ScriptedDevice(
        gateway, "home", "car", "car-1",
        answer=lambda c: {"id": c["id"], "status": "failed", "reason": HOSTILE, "ts": time.time()},
    ).connect()  # fmt: skip
    try:
        token = serve.token(["home"], role="operator", name="sam")
        sign_in_by_touch(phone, serve, token, "/#/device/home/car-1")
        phone.locator('#commands form[data-command="lock"] button').tap()
        failed = phone.locator('#command-log li[data-name="lock"][data-status="failed"]')
        expect(failed).to_contain_text(HOSTILE, timeout=10_000)  # the text, as the device said
        assert failed.locator("img").count() == 0
        assert phone.title() != "owned"
    finally:
        device.disconnect()


def test_an_acknowledgement_links_token_is_kept_in_no_cache(
    phone: Page,  # noqa: F811
    serve: RunningServe,
) -> None:
    """The link's token is its whole authority: opened on a phone whose dashboard installed
    the worker, its page passes by the worker's caches (the page itself, kept, is the control)."""
    sign_in_by_touch(phone, serve, serve.token(["farm"], role="viewer", name="farmer-jo"))
    phone.wait_for_function("navigator.serviceWorker.controller !== null", timeout=10_000)
    link_token = "t" * 43  # the shape of a link's token; whether it is valid does not matter here
    phone.goto(f"{serve.url}/ack/{link_token}")
    kept = phone.evaluate(
        """async () => {
            const urls = [];
            for (const name of await caches.keys()) {
                for (const r of await (await caches.open(name)).keys()) urls.push(r.url);
            }
            return urls;
        }"""
    )
    assert f"{serve.url}/" in kept  # the page, kept for offline
    assert not [url for url in kept if link_token in url], kept
