"""`moclo serve`'s HTTP API against a real broker, database and ingest: what it lists, that it
answers exactly what `moclo query` answers, that bad parameters are refused, and that its live
stream carries alert changes and readings as they happen."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from devices.topics import telemetry_topic
from ingest.influx import InfluxClient
from moclo.settings import Settings
from query.request import parse_series_request
from query.series import run_series
from serve.live import Event, Stream, StreamFilter
from tests.conftest import RunningIngest, RunningServe
from tests.helpers import COW, publish_all, wait_until

NOW = int(time.time()) // 60 * 60
HOUR = 3600


def cow_history(
    settings: Settings, tenant: str, device_id: str, temps: list[float], *, end: int = NOW
) -> None:
    """One reading every 5 minutes up to `end`, with these temperatures, as one array message."""
    start = end - 300 * (len(temps) - 1)
    readings = [
        {**COW, "ts": start + 300 * i, "seq": i, "body_temp_c": t, "activity": 400 + i}
        for i, t in enumerate(temps)
    ]
    topic = telemetry_topic(settings.topic_prefix, tenant, "cow_tracker", device_id)
    publish_all(settings.mqtt_url, [(topic, orjson.dumps(readings))])


def pacemaker(settings: Settings, tenant: str, device_id: str) -> None:
    reading = {
        "ts": NOW,
        "seq": 1,
        "heart_rate_bpm": 72,
        "paced_pct": 12.0,
        "battery_v": 3.0,
        "lead_impedance_ohm": 600,
        "event": "none",
    }
    topic = telemetry_topic(settings.topic_prefix, tenant, "pacemaker", device_id)
    publish_all(settings.mqtt_url, [(topic, orjson.dumps(reading))])


@pytest.fixture
def fleet(settings: Settings, ingest: RunningIngest) -> RunningIngest:
    """Two cows on a farm (cow-1 with a fever from its 20th reading on), a pacemaker in a
    clinic, all through ingest."""
    cow_history(settings, "farm", "cow-1", [38.6] * 20 + [39.9] * 6)
    cow_history(settings, "farm", "cow-2", [38.5] * 26)
    pacemaker(settings, "clinic", "pm-1")
    wait_until(
        lambda: ingest.stats.readings_stored >= 53 and ingest.alerts,
        what="the fleet stored and the fever raised",
    )
    return ingest


def get(serve: RunningServe, path: str, **params: Any) -> httpx.Response:
    return httpx.get(serve.url + path, params=params, timeout=10)


def test_tenants_devices_and_their_open_alerts(fleet: RunningIngest, serve: RunningServe) -> None:
    assert get(serve, "/api/tenants").json() == {"tenants": ["clinic", "farm"]}

    devices = get(serve, "/api/devices", tenant="farm").json()["devices"]
    by_id = {d["device_id"]: d for d in devices}
    assert set(by_id) == {"cow-1", "cow-2"}  # not the clinic's pacemaker
    assert by_id["cow-1"]["open_alerts"] == 1
    assert by_id["cow-1"]["worst_severity"] == "warning"
    assert by_id["cow-1"]["last"]["body_temp_c"] == 39.9
    assert by_id["cow-2"]["open_alerts"] == 0
    assert by_id["cow-2"]["last"]["activity"] == 425
    assert by_id["cow-2"]["last_seen"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW))

    everyone = {d["device_id"] for d in get(serve, "/api/devices").json()["devices"]}
    assert everyone == {"cow-1", "cow-2", "pm-1"}

    one = get(serve, "/api/devices/clinic/pm-1").json()
    assert (one["device_type"], one["last"]["heart_rate_bpm"]) == ("pacemaker", 72)


def test_series_is_what_moclo_query_answers(
    fleet: RunningIngest, serve: RunningServe, settings: Settings
) -> None:
    params = {"device": "cow-1", "tenant": "farm", "field": "body_temp_c", "since": "3h"}
    params |= {"every": "30m", "agg": "max"}
    served = get(serve, "/api/series", **params).json()

    async def direct() -> dict[str, Any]:
        client = InfluxClient(settings.influx_url, settings.influx_db)
        try:
            request = parse_series_request(
                device_id="cow-1",
                device_type=None,
                tenant="farm",
                fields=("body_temp_c",),
                since="3h",
                start=None,
                end=None,
                every="30m",
                agg="max",
                group_by=None,
                now_ns=time.time_ns(),
            )
            return (await run_series(client, request)).to_json()
        finally:
            await client.close()

    expected = asyncio.run(direct())
    assert served["series"] == expected["series"]
    # And independently: the fever's last half hour has a maximum of 39.9.
    maxima = [point[1] for point in served["series"][0]["points"]]
    assert maxima[-1] == 39.9
    assert max(maxima[:-2]) == 38.6


def test_alerts_and_episodes(fleet: RunningIngest, serve: RunningServe) -> None:
    alerts = get(serve, "/api/alerts", tenant="farm").json()["alerts"]
    assert [(a["rule"], a["device_id"], a["state"]) for a in alerts] == [
        ("fever", "cow-1", "raised")
    ]
    assert get(serve, "/api/alerts", tenant="clinic").json() == {"alerts": []}

    episodes = get(serve, "/api/episodes", tenant="farm", device="cow-1", since="6h").json()
    (episode,) = episodes["episodes"]
    # Raised on the third reading at 39.9 (three in a row), still open.
    raised_at = NOW - 300 * 3
    assert episode["start"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(raised_at))
    assert (episode["end"], episode["rule"], episode["id"]) == (None, "fever", alerts[0]["id"])
    assert get(serve, "/api/episodes", tenant="farm", device="cow-2").json() == {"episodes": []}


@pytest.mark.parametrize(
    ("path", "params", "status", "words"),
    [
        ("/api/devices", {"tenant": "farm' OR 1=1"}, 400, "tenant"),
        ("/api/alerts", {"device": 'x"; DROP DATABASE x'}, 400, "device"),
        ("/api/series", {"device": "cow-1", "field": 'body_temp_c" FROM x;'}, 400, "field"),
        ("/api/series", {"device": "no-such-cow"}, 404, "no-such-cow"),
        ("/api/series", {"device": "cow-1", "since": "yesterday"}, 400, "yesterday"),
        ("/api/devices/farm/no-such-cow", {}, 404, "no-such-cow"),
        ("/api/stream", {"tenant": "/.*/"}, 400, "tenant"),
    ],
)
def test_bad_parameters_get_a_clear_error(
    fleet: RunningIngest,
    serve: RunningServe,
    path: str,
    params: dict[str, str],
    status: int,
    words: str,
) -> None:
    response = get(serve, path, **params)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
    # Nothing was harmed: the data is all still there.
    assert len(get(serve, "/api/devices").json()["devices"]) == 3


def test_openapi_describes_every_endpoint(serve: RunningServe) -> None:
    spec = get(serve, "/api/openapi.json").json()
    assert set(spec["paths"]) == {
        "/api/tenants",
        "/api/devices",
        "/api/devices/{tenant}/{device_id}",
        "/api/series",
        "/api/alerts",
        "/api/episodes",
        "/api/stream",
        "/healthz",
    }
    series_params = {p["name"] for p in spec["paths"]["/api/series"]["get"]["parameters"]}
    assert series_params == {
        "device",
        "type",
        "tenant",
        "field",
        "since",
        "from",
        "to",
        "every",
        "agg",
        "group_by",
    }


def test_dashboard_files_are_served_with_nothing_from_the_internet(serve: RunningServe) -> None:
    page = get(serve, "/")
    assert page.status_code == 200 and "<title>moclo</title>" in page.text
    for asset in ("/static/app.js", "/static/style.css", "/static/vendor/uPlot.iife.min.js"):
        assert get(serve, asset).status_code == 200, asset
    # The page and its script name no other host: no CDN, no font service.
    assert "//" not in page.text.replace("<!doctype html>", "")
    assert "http:" not in get(serve, "/static/app.js").text.replace("https:", "http:")


class StreamReader:
    """Reads `/api/stream` on a thread and keeps every event (name, data)."""

    def __init__(self, url: str) -> None:
        self.events: list[tuple[str, Any]] = []
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=None))
        self._response = self._client.send(self._client.build_request("GET", url), stream=True)
        assert self._response.status_code == 200
        assert self._response.headers["content-type"].startswith("text/event-stream")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        name = ""
        try:
            for line in self._response.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    self.events.append((name, orjson.loads(line[6:])))
        except httpx.HTTPError:
            pass  # closed by the test

    def named(self, name: str) -> list[Any]:
        return [data for event, data in self.events if event == name]

    def close(self) -> None:
        self._response.close()
        self._client.close()


@pytest.fixture
def stream_reader(serve: RunningServe) -> Iterator[type[StreamReader]]:
    readers: list[StreamReader] = []

    def opened(url: str) -> StreamReader:
        reader = StreamReader(url)
        readers.append(reader)
        return reader

    yield opened  # type: ignore[misc]
    for reader in readers:
        reader.close()


def test_live_stream_carries_alert_changes_and_readings(
    fleet: RunningIngest, serve: RunningServe, settings: Settings, stream_reader: Any
) -> None:
    farm = stream_reader(f"{serve.url}/api/stream?tenant=farm")
    clinic = stream_reader(f"{serve.url}/api/stream?tenant=clinic&readings=false")
    wait_until(lambda: farm.named("hello") and clinic.named("hello"), what="both streams open")
    wait_until(lambda: get(serve, "/healthz").json()["live_stream"], what="live subscription")

    # cow-1 recovers: three readings below 39.2 resolve its fever.
    topic = telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", "cow-1")
    readings = [
        {**COW, "ts": NOW + 60 * i, "seq": 100 + i, "body_temp_c": 38.7} for i in range(1, 4)
    ]
    publish_all(settings.mqtt_url, [(topic, orjson.dumps(r)) for r in readings])

    resolved = wait_until(
        lambda: [a for a in farm.named("alert") if a["state"] == "resolved"],
        what="the resolution on the farm's stream",
    )
    assert [(a["rule"], a["device_id"]) for a in resolved] == [("fever", "cow-1")]
    newest = wait_until(
        lambda: [r for batch in farm.named("readings") for r in batch if r["seq"] == 103],
        what="the newest reading on the stream",
    )
    assert newest[0]["body_temp_c"] == 38.7 and newest[0]["device_type"] == "cow_tracker"
    # The clinic's stream saw neither the farm's alert nor any reading.
    assert clinic.named("alert") == [] and clinic.named("readings") == []


def test_a_stream_too_slow_is_told_and_ends() -> None:
    stream = Stream(StreamFilter())

    async def fill() -> list[str]:
        for i in range(2_000):
            stream.offer(Event("alert", str(i).encode()))
        names = []
        while not stream.queue.empty():
            names.append(stream.queue.get_nowait().name)
        return names

    names = asyncio.run(fill())
    assert names[-1] == "overflow" and stream.overflowed
    assert names.count("alert") == 999  # what fitted, minus the room made for the notice
