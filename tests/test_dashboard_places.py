"""The car's map with its places and where the automation fired, in a real headless browser
(Playwright driving Debian's Chromium) under the dashboard's Content-Security-Policy, with no
tile server, against a real broker, database, ingest (with a rules file and an automations
file) and `moclo serve`: the 1 km `near_home` geofence is drawn as a circle with its name, the
arrival rule's destination as a point, and the point where `near_home` was raised is marked
with the time and what the `porch_light` automation did."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from tests.test_dashboard import browser, page, save  # noqa: F401 (fixtures)
from tests.test_dashboard_acting import sign_in
from tests.test_serve_places import TRACK, Drive, drive  # noqa: F401 (a fixture)


def test_the_cars_map_shows_the_geofence_and_where_the_automation_fired(
    page: Page,  # noqa: F811
    drive: Drive,  # noqa: F811
    tmp_path: Path,
) -> None:
    serve = drive.serve
    sign_in(page, serve, serve.token(["home"], role="viewer"), "/#/device/home/car-1")
    track = page.locator('.chart[data-field="position"] .track-map')
    expect(track).to_have_attribute("data-points", str(TRACK))
    expect(track).to_have_attribute("data-places", "2", timeout=10_000)
    # The geofence is a circle (an SVG path) named on the map; the destination a point.
    expect(track.locator("path.place-geofence.place-rule-near_home")).to_have_count(1)
    expect(track.locator("path.place-arrival.place-rule-home_in_two_hours")).to_have_count(1)
    for name in ("near_home (inside)", "home_in_two_hours (destination)"):
        expect(track.locator(".place-label", has_text=name)).to_have_count(1)
    # Where near_home was raised, with what the automation did once the light answered.
    raised = track.locator("path.raised-marker.raised-near_home")
    expect(raised).to_have_count(1)
    label = track.locator(".raised-label", has_text="near_home raised")
    expect(label).to_have_count(1)
    expect(label).to_contain_text("porch_light: switch light-1 (succeeded)")
    expect(label).to_have_attribute("data-actions", "1")
    expect(page.locator(".leaflet-tile")).to_have_count(0)
    save(page, tmp_path, "car-places.png")
