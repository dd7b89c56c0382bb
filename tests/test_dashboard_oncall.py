"""On a phone (Playwright driving Debian's Chromium at 390×844 with touch, under the
dashboard's Content-Security-Policy), against a real broker, database, ingest and `moclo serve`
with a notify file: the on-call panel sits under the open alerts, and a message's one-tap link
opens a page that fits the screen and acknowledges with one tap on its button. With
MOCLO_UPDATE_SCREENSHOTS=1 it refreshes docs/images/phone-ack-link.png."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from playwright.sync_api import Page, expect

from core.settings import Settings
from tests.conftest import RunningIngest, RunningServe
from tests.test_dashboard import browser  # noqa: F401 (a fixture)
from tests.test_dashboard_phone import IMAGES, OVERFLOW, phone, sign_in_by_touch, top  # noqa: F401
from tests.test_oncall_and_ack_link import alert_of, fever, link, notified  # noqa: F401


def test_on_a_phone_who_is_on_call_and_a_messages_link_acknowledge_in_one_tap(
    phone: Page,  # noqa: F811
    settings: Settings,
    ingest: RunningIngest,
    notified: RunningServe,  # noqa: F811
    tmp_path: Path,
) -> None:
    alert_id = fever(settings, notified, "farm", "cow-1")
    sign_in_by_touch(phone, notified, notified.token(["farm"], role="viewer", name="farm-tv"))
    on_call = phone.locator('#oncall li[data-rotation="farm-week"]')
    expect(on_call.locator(".person")).to_have_text("farmer-jo")
    expect(on_call).to_contain_text("then vet-ana")
    expect(phone.locator("#oncall li")).to_have_count(1)  # nothing of the clinic's
    assert top(phone, "#open-panel") < top(phone, "#oncall-panel") < top(phone, "#fleet-view")
    assert phone.evaluate(OVERFLOW) == []

    # The link in farmer-jo's message, opened on her phone.
    phone.goto(f"{notified.url}/ack/{link(alert_id, 'farmer-jo')}")
    expect(phone.locator("h2")).to_have_text("Acknowledge this alert?")
    expect(phone.locator(".ack-alert")).to_contain_text("fever (warning) on farm/cow-1")
    button = phone.locator("button.ack-confirm")
    box = button.bounding_box()
    assert box is not None and box["height"] >= 44
    assert phone.evaluate(OVERFLOW) == []
    if os.environ.get("MOCLO_UPDATE_SCREENSHOTS") == "1":
        phone.screenshot(path=str(tmp_path / "phone-ack-link.png"))
        shutil.copy(tmp_path / "phone-ack-link.png", IMAGES / "phone-ack-link.png")
    assert (alert_of(notified, "farm", "cow-1") or {})["state"] == "raised"  # opening did nothing
    button.tap()
    expect(phone.locator("h2")).to_have_text("Acknowledged", timeout=15_000)
    assert (alert_of(notified, "farm", "cow-1") or {})["acknowledged_by"] == "jo"
