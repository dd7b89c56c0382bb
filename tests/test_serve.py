"""`moclo serve`'s HTTP API against a real broker, database and ingest: what it lists, that it
answers exactly what `moclo query` answers, that bad parameters are refused, that its live
stream carries alert changes and readings as they happen, signing in (a token, or the
dashboard's cookie), and acknowledging an alert. Who sees what is tests/test_api_access.py's."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from core.settings import Settings
from devices.topics import telemetry_topic
from query.request import parse_series_request
from query.series import run_series
from serve.live_stream import Event, Stream, StreamFilter
from storage.alert_record import Alert
from storage.influx import InfluxClient
from tests.conftest import RunningIngest, RunningServe
from tests.helpers import COW, Influx, publish_all, wait_until

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


def get(serve: RunningServe, path: str, token: str | None = None, **params: Any) -> httpx.Response:
    """GET as an admin of every tenant, unless another `token` is given."""
    headers = {"Authorization": f"Bearer {token or serve.admin_token}"}
    return httpx.get(serve.url + path, params=params, headers=headers, timeout=10)


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
        "/api/session",
        "/api/tenants",
        "/api/devices",
        "/api/devices/{tenant}/{device_id}",
        "/api/devices/{tenant}/{device_id}/commands",
        "/api/devices/{tenant}/{device_id}/commands/{command_id}",
        "/api/devices/{tenant}/{device_id}/command-history",
        "/api/devices/{tenant}/{device_id}/desired",
        "/api/devices/{tenant}/{device_id}/places",
        "/api/devices/{tenant}/{device_id}/automation-actions",
        "/api/map",
        "/api/series",
        "/api/alerts",
        "/api/alerts/{alert_id}/ack",
        "/api/alerts/{alert_id}/timeline",
        "/api/episodes",
        "/api/oncall",
        "/api/stream",
        "/healthz",
    }
    assert set(spec["components"]["securitySchemes"]) == {"token", "session"}
    assert spec["paths"]["/api/devices"]["get"]["security"] == [{"token": []}, {"session": []}]
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

    def __init__(self, url: str, token: str) -> None:
        self.events: list[tuple[str, Any]] = []
        self.ended = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=None))
        request = self._client.build_request(
            "GET", url, headers={"Authorization": f"Bearer {token}"}
        )
        self._response = self._client.send(request, stream=True)
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
        finally:
            self.ended.set()

    def named(self, name: str) -> list[Any]:
        return [data for event, data in self.events if event == name]

    def close(self) -> None:
        self._response.close()
        self._client.close()


@pytest.fixture
def stream_reader(serve: RunningServe) -> Iterator[type[StreamReader]]:
    readers: list[StreamReader] = []

    def opened(url: str, token: str | None = None) -> StreamReader:
        reader = StreamReader(url, token or serve.admin_token)
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


# -- signing in ------------------------------------------------------------------------------


def test_serve_says_how_to_make_the_first_token(
    serve: RunningServe, caplog: pytest.LogCaptureFixture
) -> None:
    started = " ".join(r.getMessage() for r in caplog.get_records("setup"))
    assert "no API token in" in started and "moclo tokens create" in started


def test_no_token_no_data_and_no_token_is_ever_repeated(
    fleet: RunningIngest, serve: RunningServe, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    revoked = serve.token(["farm"], role="viewer", name="gone")
    serve.tokens.revoke("gone")
    wait_until(lambda: get(serve, "/api/tenants", token=revoked).status_code == 401, what="revoked")
    presented = [
        revoked,
        revoked[:-1] + ("A" if revoked[-1] != "A" else "B"),
        "moclo_0123456789ab_" + "x" * 43,
        "not-a-token-at-all",
    ]
    for token in presented:
        for path in ("/api/tenants", "/api/devices", "/api/stream"):
            answer = get(serve, path, token=token)
            assert answer.status_code == 401, (path, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
            assert "not valid" in answer.json()["error"]
            assert token not in answer.text and token not in str(answer.headers)
    bare = httpx.get(serve.url + "/api/devices", timeout=10)
    assert bare.status_code == 401 and "moclo tokens create" in bare.json()["error"]
    basic = httpx.get(
        serve.url + "/api/devices", headers={"Authorization": "Basic YTpi"}, timeout=10
    )
    assert basic.status_code == 401 and "Bearer <token>" in basic.json()["error"]
    session = httpx.post(serve.url + "/api/session", json={"tokn": presented[0]}, timeout=10)
    assert session.status_code == 400 and presented[0] not in session.text
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for token in presented:
        assert token not in logged


def test_the_dashboards_session_cookie(fleet: RunningIngest, serve: RunningServe) -> None:
    token = serve.token(["farm"], role="viewer", name="screen")
    with httpx.Client(base_url=serve.url, timeout=10) as browser:
        refused = browser.post("/api/session", json={"token": token[:-2]})
        assert refused.status_code == 401 and "set-cookie" not in refused.headers
        assert browser.get("/api/session").status_code == 401

        signed_in = browser.post("/api/session", json={"token": token})
        assert signed_in.status_code == 200
        assert signed_in.json() | {"token_id": "-"} == {
            "token_id": "-",
            "name": "screen",
            "role": "viewer",
            "tenants": ["farm"],
        }
        cookie = signed_in.headers["set-cookie"]
        assert cookie.startswith("moclo_session=")
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/api"} <= flags
        assert "secure" not in flags  # plain http here; Secure when served over https
        assert token not in signed_in.text

        # The cookie alone signs every request in, the live stream too.
        assert browser.get("/api/tenants").json() == {"tenants": ["farm"]}
        assert browser.get("/api/session").json()["name"] == "screen"
        with browser.stream("GET", "/api/stream") as stream:
            assert stream.status_code == 200

        # A change carried by the cookie from another site's page is refused.
        elsewhere = {"Origin": "http://evil.example"}
        assert browser.delete("/api/session", headers=elsewhere).status_code == 403
        assert (
            browser.post("/api/alerts/0123456789ab/ack", json={}, headers=elsewhere).status_code
            == 403
        )

        signed_out = browser.delete("/api/session", headers={"Origin": serve.url})
        assert signed_out.status_code == 204
        assert "max-age=0" in signed_out.headers["set-cookie"].lower()
        assert browser.get("/api/tenants").status_code == 401

        # Revoking the token ends a session within about a second.
        assert browser.post("/api/session", json={"token": token}).status_code == 200
        serve.tokens.revoke("screen")
        wait_until(
            lambda: browser.get("/api/tenants").status_code == 401,
            timeout_s=3,
            what="the revoked token's session refused",
        )


def test_a_revoked_token_ends_its_live_stream(serve: RunningServe, stream_reader: Any) -> None:
    token = serve.token(["farm"], role="viewer", name="watcher")
    reader = stream_reader(f"{serve.url}/api/stream?tenant=farm", token)
    wait_until(lambda: reader.named("hello"), what="the stream open")
    serve.tokens.revoke("watcher")
    assert reader.ended.wait(8), "the stream went on after its token was revoked"
    assert reader.named("unauthorized") == [{"reason": "the token was revoked"}]


# -- acknowledging ---------------------------------------------------------------------------


def ack(serve: RunningServe, alert_id: str, token: str, note: str | None = None) -> httpx.Response:
    body = {} if note is None else {"note": note}
    return httpx.post(
        f"{serve.url}/api/alerts/{alert_id}/ack",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_an_operator_acknowledges_through_the_api(
    fleet: RunningIngest, serve: RunningServe, stream_reader: Any
) -> None:
    (fever,) = get(serve, "/api/alerts", tenant="farm").json()["alerts"]
    farm = stream_reader(f"{serve.url}/api/stream?tenant=farm&readings=false")
    wait_until(lambda: farm.named("hello"), what="the stream open")

    viewer = ack(serve, fever["id"], serve.token(["farm"], role="viewer"))
    assert viewer.status_code == 403 and "viewer" in viewer.json()["error"]
    other = ack(serve, fever["id"], serve.token(["clinic"], role="operator"))
    assert other.status_code == 404 and "farm" not in other.text
    operator = serve.token(["farm"], role="operator", name="vet-ana")
    assert ack(serve, "not-an-id", operator).status_code == 400
    assert ack(serve, "0123456789ab", operator).status_code == 404
    assert ack(serve, fever["id"], operator, note="x" * 501).status_code == 400

    done = ack(serve, fever["id"], operator, note="vet called")
    assert done.status_code == 200, done.text
    body = done.json()
    assert (body["id"], body["state"], body["acknowledged_by"], body["note"]) == (
        fever["id"],
        "acknowledged",
        "vet-ana",
        "vet called",
    )
    # Everyone watching the farm sees it, and the list has it once ingest has stored it.
    wait_until(lambda: farm.named("alert"), what="the acknowledgement on the stream")
    assert [(a["state"], a["acknowledged_by"]) for a in farm.named("alert")] == [
        ("acknowledged", "vet-ana")
    ]
    wait_until(
        lambda: (
            get(serve, "/api/alerts", tenant="farm").json()["alerts"][0]["state"] == "acknowledged"
        ),
        what="the acknowledgement stored",
    )
    again = ack(serve, fever["id"], serve.token(role="admin"))
    assert again.status_code == 409 and "already acknowledged by vet-ana" in again.json()["error"]


def test_an_acknowledgement_nobody_confirms_is_a_504(
    settings: Settings, influx: Influx, tmp_path: Path
) -> None:
    ts = (NOW - 600) * 10**9
    alert = Alert(
        alert_id="00c0ffee00aa",
        state="raised",
        rule="fever",
        kind="threshold",
        severity="warning",
        tenant="farm",
        device_type="cow_tracker",
        device_id="cow-5",
        value=40.2,
        message="fever: body temperature 40.2 °C",
        ts_ns=ts,
        first_seen_ns=ts - 120 * 10**9,
        last_seen_ns=ts,
    )
    influx.write([alert.to_line()])  # stored, but no ingest runs to take the acknowledgement
    update = {"serve_listen": "127.0.0.1:0", "registry": str(tmp_path / "registry.sqlite")}
    with RunningServe(settings.model_copy(update=update), acknowledgement_timeout_s=1.0) as serve:
        answer = ack(serve, alert.alert_id, serve.token(["farm"], role="operator"))
    assert answer.status_code == 504
    assert "is `moclo ingest` running?" in answer.json()["error"]
