"""/metrics since its renderer is imported at the first scrape (ingest/http.py): two first
scrapes at once both answered, and an import that fails answered with its reason while ingest
goes on storing readings and answers again once the import works."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from core.settings import Settings
from tests.conftest import RunningIngest
from tests.helpers import publish_all, wait_until
from tests.test_operations import cow, get


def _two_scrapes_at_once(running: RunningIngest) -> list[httpx.Response]:
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda _: get(running, "/metrics"), range(2)))


def test_a_renderer_that_cannot_be_imported_gets_a_500_with_its_reason_and_ingest_goes_on(
    settings: Settings, ingest: RunningIngest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bug (mem4, found by review): the import moved into the route, and an exception from a
    # route escaped core/http_endpoint.py: the scraper got its connection closed with no HTTP
    # answer at all (httpx.RemoteProtocolError) and the reason reached only asyncio's
    # "Unhandled exception in client_connected_cb". Before mem4 such an install failed loudly
    # at start; now ingest runs, so the scrape itself must say what is wrong.
    monkeypatch.setitem(sys.modules, "ingest.metrics", None)  # as a broken install would
    broken = _two_scrapes_at_once(ingest)
    assert [r.status_code for r in broken] == [500, 500]
    assert all("ingest.metrics" in r.text for r in broken), broken[0].text
    assert get(ingest, "/healthz").status_code == 200
    publish_all(settings.mqtt_url, [cow("cow-1", 1, settings)])
    wait_until(lambda: ingest.stats.readings_stored == 1, what="ingest still storing")
    # Control, and the first-scrape race: installed again, two first scrapes at once both
    # get the whole exposition.
    monkeypatch.undo()
    sys.modules.pop("ingest.metrics", None)  # so that this scrape is a first import again
    scraped = _two_scrapes_at_once(ingest)
    assert [r.status_code for r in scraped] == [200, 200]
    assert all("\nmoclo_pending_bytes " in r.text for r in scraped)
