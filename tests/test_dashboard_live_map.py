"""The maps are live, in a real headless browser (Playwright driving Debian's Chromium) under the
dashboard's Content-Security-Policy, with no tile server, against a real broker, database,
ingest (with the places' rules file and the porch-light automation) and `moclo serve`: a car's
marker on the fleet map moves when its next position is published; on its own page, the track
grows as it drives on, and when it crosses into the 1 km `near_home` geofence the point where
the alert was raised appears, labelled with what the automation did and how that went, without
reloading the page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from playwright.sync_api import Page, expect

from core.settings import Settings
from devices.topics import telemetry_topic
from tests.conftest import RunningIngest, RunningServe
from tests.helpers import publish_all, wait_until
from tests.test_dashboard import browser, page, save  # noqa: F401 (fixtures)
from tests.test_dashboard_acting import sign_in
from tests.test_serve import NOW
from tests.test_serve_commands import CAR
from tests.test_serve_places import CROSSING, HOME, TRACK, with_places


def position(i: int) -> bytes:
    """The car's i-th reading of its drive north towards home (ten minutes apart, ending at
    home; from CROSSING on, within 1 km of it)."""
    reading = {**CAR, "ts": NOW - 600 * (TRACK - i), "seq": i + 1, "speed_kmh": 30.0,
               "lat": HOME[0] - 0.005 * (TRACK - 1 - i), "lon": HOME[1]}  # fmt: skip
    return orjson.dumps(reading)


class Car:
    def __init__(self, settings: Settings, ingest: RunningIngest, serve: RunningServe) -> None:
        self.settings, self.ingest, self.serve = settings, ingest, serve
        self.topic = telemetry_topic(settings.topic_prefix, "home", "car", "car-1")

    def drive(self, positions: range) -> None:
        """Publishes these positions and waits until ingest stored them."""
        stored = self.ingest.stats.readings_stored
        publish_all(self.settings.mqtt_url, [(self.topic, position(i)) for i in positions])
        wait_until(
            lambda: self.ingest.stats.readings_stored >= stored + len(positions),
            what=f"positions {positions} stored",
        )


@pytest.fixture
def car(settings: Settings, tmp_path: Path) -> Iterator[Car]:
    """Ingest and serve with the places' rules and the porch-light automation, the light it
    switches, and no position of the car yet."""
    with with_places(settings, tmp_path) as (settings, ingest, serve, _):
        yield Car(settings, ingest, serve)


def test_markers_move_the_track_grows_and_the_automation_appears_where_it_fired(
    page: Page,  # noqa: F811
    car: Car,
    tmp_path: Path,
) -> None:
    car.drive(range(CROSSING - 1))  # still outside the geofence
    sign_in(page, car.serve, car.serve.token(["home"], role="viewer"), "/?tenant=home")
    marker = page.locator("#fleet-map path.device-car-1")
    expect(marker).to_have_count(1)
    before = marker.get_attribute("d")
    car.drive(range(CROSSING - 1, CROSSING))  # 556 m further north, still outside
    expect(marker).not_to_have_attribute("d", before or "", timeout=10_000)
    expect(page.locator("#fleet-map")).to_have_attribute("data-markers", "1")

    page.goto(car.serve.url + "/#/device/home/car-1")
    track = page.locator('.chart[data-field="position"] .track-map')
    expect(track).to_have_attribute("data-points", str(CROSSING))
    expect(track).to_have_attribute("data-places", "2", timeout=10_000)
    # Only the arrival rule (home within two hours) was raised so far.
    expect(track).to_have_attribute("data-raised", "1", timeout=10_000)
    near_home = track.locator("path.raised-marker.raised-near_home")
    expect(near_home).to_have_count(0)
    latest = track.locator("path.leaflet-interactive").last
    was = latest.get_attribute("d")
    # Into the geofence (near_home raised, the light switched on), one position at a time: the
    # live stream carries each device's newest reading of each tick, as a car reports.
    for i in range(CROSSING, TRACK):
        car.drive(range(i, i + 1))
        expect(track).to_have_attribute("data-points", str(i + 1), timeout=10_000)
    label = track.locator(".raised-label", has_text="near_home raised")
    expect(label).to_have_count(1, timeout=15_000)
    expect(label).to_contain_text("porch_light: switch light-1 (succeeded)", timeout=15_000)
    expect(track).to_have_attribute("data-raised", "2")
    expect(near_home).to_have_count(1)
    assert latest.get_attribute("d") != was  # the latest position moved with the car
    expect(page.locator(".leaflet-tile")).to_have_count(0)
    save(page, tmp_path, "live-map.png")
