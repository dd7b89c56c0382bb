"""The dashboard on a phone, in a real headless browser (Playwright driving Debian's Chromium,
emulating a 390×844 touch screen) under the dashboard's Content-Security-Policy, against a real
broker, database, ingest and `moclo serve`: open alerts come first and one tap acknowledges;
the fleet folds into cards with nothing cut off; a device's charts, map and commands fit the
screen; the page installs as an app and shows its last view offline, marked as such, and
nothing of it after signing out. At desktop width the layout stays as it was.

With MOCLO_UPDATE_SCREENSHOTS=1 it refreshes the phone screenshots in docs/images/, shown in
docs/notifications.md ("On the phone")."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from playwright.sync_api import Browser, Page, expect

from core.settings import Settings
from devices.topics import telemetry_topic
from tests.browser import guarded
from tests.conftest import RunningIngest, RunningServe
from tests.gateway_helpers import ScriptedDevice
from tests.helpers import COW, publish_all, wait_until
from tests.phone_icons import ICONS, png_size
from tests.test_dashboard import browser, page  # noqa: F401 (fixtures)
from tests.test_dashboard_acting import TRACK, drive_home
from tests.test_serve import NOW, cow_history
from tests.test_serve_commands import gateway  # noqa: F401 (a fixture)

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
# Elements that reach past the left or right edge of the screen, outside any box that scrolls
# or clips them (a map's panes, a scrolling list), and whether the document scrolls sideways.
OVERFLOW = """() => {
    const out = [];
    const doc = document.documentElement;
    if (doc.scrollWidth > innerWidth) out.push(`the document: ${doc.scrollWidth} > ${innerWidth}`);
    const clipped = (e) => {
        for (let p = e.parentElement; p; p = p.parentElement) {
            if (getComputedStyle(p).overflowX !== "visible") return true;
        }
        return false;
    };
    for (const e of document.querySelectorAll("body *")) {
        const r = e.getBoundingClientRect();
        if (r.width === 0 || r.height === 0 || clipped(e)) continue;
        if (r.right > innerWidth + 0.5 || r.left < -0.5) {
            out.push(`${e.tagName.toLowerCase()}#${e.id}.${e.className}: ${r.left}..${r.right}`);
        }
    }
    return out;
}"""


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:  # noqa: F811
    with guarded(browser.new_context(**PHONE)) as tab:
        yield tab


def shoot(tab: Page, tmp_path: Path, name: str) -> None:
    """A screenshot of what the phone shows; kept in docs/images with MOCLO_UPDATE_SCREENSHOTS=1."""
    shot = tmp_path / name
    tab.screenshot(path=str(shot), full_page=False)
    assert png_size(shot) == (780, 1688)  # 390×844 at two device pixels per CSS pixel
    if os.environ.get("MOCLO_UPDATE_SCREENSHOTS") == "1":
        IMAGES.mkdir(exist_ok=True)
        shutil.copy(shot, IMAGES / name)


def sign_in_by_touch(tab: Page, serve: RunningServe, token: str, where: str = "/") -> None:
    tab.goto(serve.url + where)
    tab.locator("#token").fill(token)
    tab.locator("#sign-in-button").tap()
    expect(tab.locator("#live")).to_have_text("live", timeout=10_000)


def within_screen(tab: Page, selector: str) -> None:
    """Every element matching `selector` is shown whole between the screen's edges, and its
    content does not spill out of it (a map clips its own panes on purpose: not counted)."""
    boxes = tab.evaluate(
        """(selector) => [...document.querySelectorAll(selector)].map((e) => {
            const r = e.getBoundingClientRect();
            const clips = getComputedStyle(e).overflowX !== "visible";
            return [r.left, r.right, r.width, clips ? e.clientWidth : e.scrollWidth, e.clientWidth];
        })""",
        selector,
    )
    assert boxes, f"nothing matches {selector}"
    width = tab.evaluate("innerWidth")
    for left, right, shown, inner, outer in boxes:
        assert shown > 0 and left >= -0.5 and right <= width + 0.5, (selector, left, right)
        assert inner <= outer + 1, (selector, "its content is wider than its box")


def top(tab: Page, selector: str) -> float:
    box = tab.locator(selector).bounding_box()
    assert box is not None, f"{selector} is not shown"
    return float(box["y"])


def test_on_a_phone_alerts_come_first_one_tap_acknowledges_and_devices_are_cards(
    phone: Page, settings: Settings, ingest: RunningIngest, serve: RunningServe, tmp_path: Path
) -> None:
    for n in range(1, 7):
        cow_history(settings, "farm", f"cow-{n}", [38.5 + 0.02 * (i % 7) for i in range(72)],
                    end=NOW - 600)  # fmt: skip
    wait_until(lambda: ingest.stats.readings_stored >= 6 * 72, what="the herd's history stored")
    topic = telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", "cow-3")
    fever = [
        {**COW, "ts": NOW - 200 + 20 * i, "seq": 100 + i, "body_temp_c": 40.1} for i in (1, 2, 3)
    ]
    publish_all(settings.mqtt_url, [(topic, orjson.dumps(r)) for r in fever])
    sign_in_by_touch(phone, serve, serve.token(["farm"], role="operator", name="vet-ana"))

    raised = phone.locator('#open-alerts li[data-rule="fever"][data-state="raised"]')
    expect(raised).to_be_visible(timeout=10_000)
    expect(phone.locator("#devices tbody tr")).to_have_count(6)
    # Open alerts above the fleet; the table is cards (no header row) with nothing cut off.
    assert top(phone, "#open-panel") < top(phone, "#fleet-view")
    expect(phone.locator("#devices thead")).to_be_hidden()
    assert phone.evaluate(OVERFLOW) == []
    for cell in (
        "#devices td.seen",
        "#devices td.values",
        "#devices td.device",
        "header > *:not([hidden])",
    ):
        within_screen(phone, cell)
    within_screen(phone, '#devices tr[data-device="cow-3"] .badge')
    seen = phone.locator('#devices tr[data-device="cow-3"] td.seen')
    assert seen.evaluate("e => getComputedStyle(e, '::before').content") == '"seen "'
    button = raised.locator("button.ack")
    box = button.bounding_box()
    assert box is not None and box["height"] >= 44  # a thumb's target
    shoot(phone, tmp_path, "phone-fleet.png")

    # One tap acknowledges: no note field in between.
    button.tap()
    expect(phone.locator('#open-alerts li[data-state="acknowledged"]')).to_contain_text(
        "acknowledged by vet-ana", timeout=15_000
    )
    expect(phone.locator("input.ack-note")).to_have_count(0)

    # The cow's page: the device first, its charts and map as wide as the screen and no wider.
    phone.locator('#devices tr[data-device="cow-3"] td.device a').tap()
    phone.locator('#ranges button[data-since="6h"]').tap()
    expect(phone.locator('#charts[data-shown="farm/cow-3/6h"]')).to_have_count(1)
    expect(phone.locator(".chart canvas")).to_have_count(4)
    expect(phone.locator('.chart[data-field="position"] .track-map')).to_have_count(1)
    assert top(phone, "#device-view") < top(phone, "#open-panel")
    assert phone.evaluate(OVERFLOW) == []
    within_screen(phone, ".chart canvas")
    within_screen(phone, ".track-map")
    within_screen(phone, "#ranges button")
    width = phone.evaluate("innerWidth")
    assert (
        phone.evaluate(
            "Math.min(...[...document.querySelectorAll('.chart canvas')].map(c => c.clientWidth))"
        )
        > 0.7 * width
    )  # readable: most of the screen, not a thumbnail


def test_on_a_phone_a_cars_commands_and_map_fit_and_work_by_touch(
    phone: Page,
    gateway: Settings,  # noqa: F811
    settings: Settings,
    ingest: RunningIngest,
    serve: RunningServe,
    tmp_path: Path,
) -> None:
    drive_home(settings)
    wait_until(lambda: ingest.stats.readings_stored >= TRACK, what="the drive stored")
    car = ScriptedDevice(settings, "home", "car", "car-1").connect()
    try:
        token = serve.token(["home"], role="operator", name="sam")
        sign_in_by_touch(phone, serve, token, "/#/device/home/car-1")
        expect(phone.locator('#charts[data-shown="home/car-1/24h"]')).to_have_count(1)
        expect(phone.locator("#commands form.command")).to_have_count(3)
        track = phone.locator('.chart[data-field="position"] .track-map')
        expect(track).to_have_attribute("data-points", str(TRACK))
        assert phone.evaluate(OVERFLOW) == []
        within_screen(phone, "#commands button")
        within_screen(phone, ".track-map")
        shoot(phone, tmp_path, "phone-device.png")
        phone.locator('#commands form[data-command="lock"] button').tap()
        done = phone.locator('#command-log li[data-name="lock"][data-status="succeeded"]')
        expect(done).to_contain_text("by sam", timeout=10_000)
        assert phone.evaluate(OVERFLOW) == []
        assert [c["name"] for c in car.commands] == ["lock"]
    finally:
        car.disconnect()


def test_offline_the_last_view_is_shown_marked_and_after_signing_out_nothing(
    phone: Page, settings: Settings, ingest: RunningIngest, serve: RunningServe, tmp_path: Path
) -> None:
    cow_history(settings, "farm", "cow-1", [38.6] * 6)
    cow_history(settings, "farm", "cow-2", [38.6] * 3 + [40.1] * 3)
    # Stored, not only raised: ingest announces an alert before it writes the batch, and the
    # page loads its first view from InfluxDB (the live stream carries only what comes later).
    wait_until(
        lambda: ingest.alerts and ingest.stats.readings_stored == 12,
        what="cow-2's fever raised and stored",
    )
    sign_in_by_touch(phone, serve, serve.token(["farm"], role="viewer", name="farmer-jo"))
    expect(phone.locator("#devices tbody tr")).to_have_count(2)
    expect(phone.locator("#open-alerts li")).to_have_count(1)
    expect(phone.locator("#offline")).to_be_hidden()
    # The worker takes over the page it was registered from and loads the view again through
    # it, which saves it; a reload is then served through it from the start.
    phone.wait_for_function("navigator.serviceWorker.controller !== null", timeout=10_000)
    phone.reload()
    expect(phone.locator("#live")).to_have_text("live", timeout=10_000)
    expect(phone.locator("#devices tbody tr")).to_have_count(2)

    phone.context.set_offline(True)
    phone.reload()
    expect(phone.locator("#devices tbody tr")).to_have_count(2, timeout=10_000)
    expect(phone.locator('#devices tr[data-device="cow-1"] td.values')).to_contain_text("38.6")
    expect(phone.locator('#open-alerts li[data-device="cow-2"]')).to_contain_text("fever")
    banner = phone.locator("#offline")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Offline: the last view, saved")
    expect(phone.locator("#live")).not_to_have_text("live")
    expect(phone.locator("main.stale-view")).to_have_count(1)
    expect(phone.locator("#error")).to_be_hidden()  # the banner says it, once
    assert phone.evaluate(OVERFLOW) == []
    shoot(phone, tmp_path, "phone-offline.png")

    # Back online: live again, the banner gone.
    phone.context.set_offline(False)
    expect(phone.locator("#live")).to_have_text("live", timeout=15_000)
    expect(banner).to_be_hidden()

    # Signed out, the saved view is gone: the next person holding this phone, offline, sees
    # no device of the farm (the offline view above is the positive control).
    phone.locator("#sign-out").tap()
    expect(phone.locator("#sign-in")).to_be_visible()
    assert phone.evaluate("caches.has('moclo-answers')") is False
    phone.context.set_offline(True)
    phone.reload()
    expect(phone.locator("#sign-in-error")).to_contain_text("Offline, and nothing saved")
    expect(phone.locator("#app")).to_be_hidden()
    assert phone.locator("#devices tbody tr").count() == 0


def test_a_revoked_token_leaves_nothing_readable_offline(
    phone: Page, settings: Settings, ingest: RunningIngest, serve: RunningServe
) -> None:
    """The phone is lost and its token revoked: the open page goes to the sign-in screen and
    the kept answers go with it, so offline it shows nothing (the same page offline before the
    revocation is the positive control)."""
    cow_history(settings, "farm", "cow-1", [38.6] * 6)
    wait_until(lambda: ingest.stats.readings_stored >= 6, what="cow-1 stored")
    sign_in_by_touch(phone, serve, serve.token(["farm"], role="viewer", name="lost-phone"))
    phone.wait_for_function("navigator.serviceWorker.controller !== null", timeout=10_000)
    phone.reload()
    expect(phone.locator("#live")).to_have_text("live", timeout=10_000)
    phone.context.set_offline(True)
    phone.reload()
    expect(phone.locator('#devices tr[data-device="cow-1"]')).to_be_visible()  # kept
    phone.context.set_offline(False)
    expect(phone.locator("#live")).to_have_text("live", timeout=15_000)

    serve.tokens.revoke("lost-phone")
    expect(phone.locator("#sign-in")).to_be_visible(timeout=15_000)
    # (evaluate awaits the promise; wait_for_function would take it as a true value)
    wait_until(
        lambda: phone.evaluate("caches.has('moclo-answers')") is False,
        what="the kept answers forgotten",
    )
    phone.context.set_offline(True)
    phone.reload()
    expect(phone.locator("#sign-in-error")).to_contain_text("Offline, and nothing saved")
    assert phone.locator("#devices tbody tr").count() == 0


def test_at_desktop_width_the_layout_stays_and_the_app_is_installable(
    page: Page,  # noqa: F811
    settings: Settings,
    ingest: RunningIngest,
    serve: RunningServe,
) -> None:
    cow_history(settings, "farm", "cow-1", [38.6] * 20 + [40.1] * 6)
    wait_until(  # stored, not only raised (see above)
        lambda: ingest.alerts and ingest.stats.readings_stored == 26,
        what="cow-1's fever raised and stored",
    )
    sign_in_with_a_mouse(page, serve, serve.token(["farm"], role="operator"))
    expect(page.locator("#open-alerts li")).to_have_count(1)
    # The alerts beside the fleet, on the right; the table has its header row.
    fleet, alerts = page.locator("#fleet-view").bounding_box(), page.locator("aside").bounding_box()
    assert fleet is not None and alerts is not None
    assert alerts["x"] >= fleet["x"] + fleet["width"] and abs(alerts["y"] - fleet["y"]) < 2
    expect(page.locator("#devices thead")).to_be_visible()
    assert page.evaluate(OVERFLOW) == []
    # With a mouse, acknowledging asks for a note first.
    page.locator("#open-alerts button.ack").click()
    expect(page.locator("#open-alerts input.ack-note")).to_be_visible()

    # Chromium's own verdict: installable, with nothing missing from the manifest.
    page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=10_000)
    cdp = page.context.new_cdp_session(page)
    verdict = cdp.send("Page.getInstallabilityErrors")["installabilityErrors"]
    # Playwright's contexts are incognito, where Chromium installs nothing; every other
    # criterion (manifest, icons, worker, a secure origin) is judged.
    assert [e for e in verdict if e["errorId"] != "in-incognito"] == []
    manifest = cdp.send("Page.getAppManifest")
    assert manifest["url"] == f"{serve.url}/manifest.webmanifest"
    assert manifest["errors"] == []


def sign_in_with_a_mouse(tab: Page, serve: RunningServe, token: str) -> None:
    tab.goto(serve.url + "/")
    tab.locator("#token").fill(token)
    tab.locator("#sign-in-button").click()
    expect(tab.locator("#live")).to_have_text("live", timeout=10_000)


def test_the_manifest_names_icons_of_several_sizes_each_as_drawn(serve: RunningServe) -> None:
    answer = httpx.get(f"{serve.url}/manifest.webmanifest", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/manifest+json"
    manifest = json.loads(answer.text)
    assert manifest["start_url"] == "/" and manifest["display"] == "standalone"
    pngs = [i for i in manifest["icons"] if i["type"] == "image/png"]
    assert {i["sizes"] for i in pngs} >= {"48x48", "96x96", "192x192", "512x512"}
    assert any(i.get("purpose") == "maskable" for i in pngs)
    for icon in pngs:
        served = httpx.get(serve.url + icon["src"], timeout=10)
        assert served.status_code == 200 and served.headers["content-type"] == "image/png"
        path = ICONS / Path(icon["src"]).name
        assert served.content == path.read_bytes()
        width, height = png_size(path)
        assert icon["sizes"] == f"{width}x{height}", icon["src"]
    worker = httpx.get(f"{serve.url}/sw.js", timeout=10)
    assert worker.status_code == 200
    assert worker.headers["content-type"].startswith("text/javascript")
