"""Acting on devices from the dashboard, and the maps, in a real headless browser (Playwright
driving Debian's Chromium) under the dashboard's Content-Security-Policy, against a real broker,
database, ingest and `moclo serve`, with no tile server at all (our machines reach none): a
car's page draws its track on a map instead of lat/lon charts and offers its commands; a click
on "lock" shows the outcome live; a pacemaker's commands are disabled for an operator, with the
reason, and a read-out a clinician asked elsewhere shows its report; the farm's fleet page
shows the herd's latest positions on a map."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from playwright.sync_api import Page, expect

from core.settings import Settings
from devices.commands import CommandUpdate
from devices.pacemaker import ReadOut
from devices.rfc3339 import format_us
from devices.topics import command_status_topic, telemetry_topic
from tests.conftest import RunningIngest, RunningServe
from tests.gateway_helpers import ScriptedDevice
from tests.helpers import COW, publish_all, wait_until
from tests.test_dashboard import browser, page, save  # noqa: F401 (fixtures)
from tests.test_serve import NOW, pacemaker
from tests.test_serve_commands import CAR, METER, gateway  # noqa: F401 (a fixture)

TRACK = 12  # positions of the car's drive home, ten minutes apart


def sign_in(tab: Page, serve: RunningServe, token: str, where: str = "/") -> None:
    tab.goto(serve.url + where)
    tab.locator("#token").fill(token)
    tab.locator("#sign-in-button").click()
    expect(tab.locator("#live")).to_have_text("live", timeout=10_000)


def drive_home(settings: Settings) -> None:
    """car-1 drives north-east towards home over the last two hours."""
    topic = telemetry_topic(settings.topic_prefix, "home", "car", "car-1")
    readings = [
        {**CAR, "ts": NOW - 600 * (TRACK - i), "seq": i, "lat": 52.0 + 0.01 * i,
         "lon": 4.3 + 0.01 * i, "speed_kmh": 60.0}
        for i in range(TRACK)
    ]  # fmt: skip
    publish_all(settings.mqtt_url, [(topic, orjson.dumps(r)) for r in readings])


def test_a_cars_track_is_a_map_and_lock_shows_its_outcome_live(
    page: Page,  # noqa: F811
    gateway: Settings,  # noqa: F811
    settings: Settings,
    ingest: RunningIngest,
    serve: RunningServe,
    tmp_path: Path,
) -> None:
    drive_home(settings)
    pacemaker(settings, "clinic", "pm-1")
    wait_until(lambda: ingest.stats.readings_stored >= TRACK + 1, what="the drive stored")
    car = ScriptedDevice(settings, "home", "car", "car-1").connect()
    try:
        token = serve.token(["home", "clinic"], role="operator", name="sam")
        sign_in(page, serve, token, "/#/device/home/car-1")
        expect(page.locator('#charts[data-shown="home/car-1/24h"]')).to_have_count(1)
        # The track on a map with a scale and no tiles; lat and lon are not charted.
        track = page.locator('.chart[data-field="position"] .track-map')
        expect(track).to_have_attribute("data-points", str(TRACK))
        expect(track.locator(".leaflet-control-scale")).to_be_visible()
        expect(track.locator("path.leaflet-interactive")).to_have_count(3)  # line, start, end
        expect(page.locator(".leaflet-tile")).to_have_count(0)
        expect(page.locator('.chart[data-field="lat"], .chart[data-field="lon"]')).to_have_count(0)
        expect(page.locator('.chart[data-field="speed_kmh"] canvas')).to_have_count(1)

        # Its commands, each a button; "lock" asks, and the outcome arrives on the stream.
        expect(page.locator("#commands form.command")).to_have_count(3)
        lock = page.locator('#commands form[data-command="lock"] button')
        expect(lock).to_be_enabled()
        lock.click()
        done = page.locator('#command-log li[data-name="lock"][data-status="succeeded"]')
        expect(done).to_be_visible(timeout=10_000)
        expect(done).to_contain_text("by sam")
        # A position that arrives now extends the track live.
        topic = telemetry_topic(settings.topic_prefix, "home", "car", "car-1")
        moved = {**CAR, "ts": NOW + 30, "seq": 99, "lat": 52.2, "lon": 4.5}
        publish_all(settings.mqtt_url, [(topic, orjson.dumps(moved))])
        expect(track).to_have_attribute("data-points", str(TRACK + 1), timeout=10_000)
        assert [c["name"] for c in car.commands] == ["lock"]

        # Desired against reported: wanted locked, waiting until the car reports it.
        page.locator(".desired-form select[name=locked]").select_option("true")
        page.locator(".desired-form button.desired-send").click()
        locked = page.locator('#desired-view tr[data-setting="locked"]')
        expect(locked).to_have_attribute("data-differs", "true", timeout=10_000)
        expect(locked).to_contain_text("waiting for the device")
        document = wait_until(lambda: car.desired, what="the desired document at the car")[-1]
        car.report(document["version"], {"locked": True})
        expect(locked).to_have_attribute("data-differs", "false", timeout=10_000)
        expect(locked).to_contain_text("applied")
        save(page, tmp_path, "acting-car.png")

        # The pacemaker's commands need a clinician: shown, disabled, saying so.
        page.goto(serve.url + "/#/device/clinic/pm-1")
        expect(page.locator('#commands[data-shown="clinic/pm-1"]')).to_have_count(1)
        rate = page.locator('#commands form[data-command="set_lower_rate"]')
        expect(rate.locator("button")).to_be_disabled()
        expect(rate.locator('input[name="lower_rate_bpm"]')).to_have_attribute("max", "90")
        expect(rate.locator(".why-not")).to_contain_text("a clinician's token")
        # A read-out a clinician asked elsewhere (the CLI, another page) shows its report here.
        report = {
            "lower_rate_bpm": 60, "heart_rate_bpm": 72, "paced_pct": 12.0, "battery_v": 2.9,
            "lead_impedance_ohm": 540, "events_since_last": {"bradycardia": 2},
        }  # fmt: skip
        announced = {
            "id": "ro-1", "device": "pm-1", "device_type": "pacemaker", "name": "read_out",
            "status": "succeeded", "issuer": "dr-lee", "ts": format_us(time.time_ns()),
            "output": ReadOut.model_validate(report).model_dump(),
        }  # fmt: skip
        CommandUpdate.model_validate(announced)
        status_topic = command_status_topic(settings.topic_prefix, "clinic", "pm-1")
        publish_all(settings.mqtt_url, [(status_topic, orjson.dumps(announced))])
        shown = page.locator('#command-log li[data-command-id="ro-1"][data-status="succeeded"]')
        expect(shown).to_contain_text("read_out by dr-lee", timeout=10_000)
        expect(shown.locator("table.output tr")).to_have_count(6)
        expect(shown.locator("table.output")).to_contain_text("bradycardia 2")
        save(page, tmp_path, "acting-pacemaker.png")
    finally:
        car.disconnect()


def test_the_herd_on_the_fleet_map_with_no_tiles(
    page: Page,  # noqa: F811
    settings: Settings,
    ingest: RunningIngest,
    serve: RunningServe,
    tmp_path: Path,
) -> None:
    topics = [
        (telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", f"cow-{n}"),
         orjson.dumps({**COW, "ts": NOW, "lat": 52.09 + 0.001 * n, "lon": 5.12 + 0.001 * n}))
        for n in range(1, 6)
    ]  # fmt: skip
    publish_all(settings.mqtt_url, topics)
    pacemaker(settings, "farm", "pm-9")  # a device without a position is not on the map
    wait_until(lambda: ingest.stats.readings_stored >= 6, what="the herd stored")
    sign_in(page, serve, serve.token(["farm"], role="viewer"), "/?tenant=farm")
    herd = page.locator("#fleet-map")
    expect(herd).to_have_attribute("data-markers", "5")
    expect(herd.locator("path.leaflet-interactive")).to_have_count(5)
    expect(herd.locator(".leaflet-control-scale")).to_be_visible()
    expect(page.locator(".leaflet-tile")).to_have_count(0)
    save(page, tmp_path, "herd.png")
    # A marker leads to its cow's page.
    herd.locator("path.device-cow-3").click()
    expect(page.locator("#device-title")).to_have_text("farm / cow-3")


def test_an_appliance_is_switched_with_a_mode_and_a_setpoint_has_its_bounds(
    page: Page,  # noqa: F811
    gateway: Settings,  # noqa: F811
    settings: Settings,
    ingest: RunningIngest,
    serve: RunningServe,
) -> None:
    meter = telemetry_topic(settings.topic_prefix, "home", "smart_meter", "meter-1")
    heating = telemetry_topic(settings.topic_prefix, "home", "thermostat", "living-room")
    warm = {"ts": NOW, "seq": 1, "temp_c": 19.5, "setpoint_c": 20.0, "humidity_pct": 40.0,
            "heating": True}  # fmt: skip
    publish_all(settings.mqtt_url, [(meter, orjson.dumps(METER)), (heating, orjson.dumps(warm))])
    wait_until(lambda: ingest.stats.readings_stored >= 2, what="meter and thermostat stored")
    device = ScriptedDevice(settings, "home", "smart_meter", "meter-1").connect()
    try:
        sign_in(page, serve, serve.token(["home"], role="operator"), "/#/device/home/meter-1")
        switch = page.locator('#commands form[data-command="switch"]')
        expect(switch.locator('select[name="mode"] option')).to_have_text(["on", "off", "standby"])
        # The appliance's name must be an identifier: the browser says so before asking.
        switch.locator('input[name="appliance"]').fill("Wash Machine!")
        switch.locator("button").click()
        assert switch.locator('input[name="appliance"]').evaluate("e => !e.validity.valid")
        switch.locator('input[name="appliance"]').fill("washer")
        switch.locator('select[name="mode"]').select_option("standby")
        switch.locator("button").click()
        done = page.locator('#command-log li[data-name="switch"][data-status="succeeded"]')
        expect(done).to_be_visible(timeout=10_000)
        assert [c["args"] for c in device.commands] == [{"appliance": "washer", "mode": "standby"}]

        page.goto(serve.url + "/#/device/home/living-room")
        setpoint = page.locator('#commands form[data-command="set_setpoint"] input')
        expect(setpoint).to_have_attribute("min", "5")
        expect(setpoint).to_have_attribute("max", "35")
    finally:
        device.disconnect()
