"""What `moclo serve`'s live stream lets through, tried from the attacker's side against a real
Mosquitto: readings of unregistered and revoked devices (the registry check ingest applies), and
an alert change whose payload names another tenant than the topic it was published on. Each
refusal has a positive control beside it: the legitimate message next to it arrives."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from access.registry import Registry
from core.settings import Settings
from devices.topics import alert_topic, telemetry_topic
from serve.live import MAX_STREAMS, LiveHub
from serve.live_stream import Stream, StreamFilter
from storage.alert_record import Alert
from tests.conftest import RunningServe
from tests.helpers import COW, publish_all, stream_status, wait_until
from tests.test_serve import StreamReader

NOW = int(time.time())


def reading(settings: Settings, tenant: str, device_id: str, seq: int) -> tuple[str, bytes]:
    topic = telemetry_topic(settings.topic_prefix, tenant, "cow_tracker", device_id)
    return topic, orjson.dumps({**COW, "ts": NOW, "seq": seq})


@pytest.fixture
def registry_serve(
    settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[RunningServe]:
    """`moclo serve` with MOCLO_UNREGISTERED as the test's parameter, and a registry holding
    t1's cow-ok and cow-mark (active) and cow-gone (registered, then revoked), but never
    cow-stranger."""
    path = tmp_path / "registry.sqlite"
    registry = Registry(path)
    registry.add_device("t1", "cow_tracker", "cow-ok")
    registry.add_device("t1", "cow_tracker", "cow-mark")
    registry.add_device("t1", "cow_tracker", "cow-gone")
    registry.revoke_device("t1", "cow-gone")
    update = {"serve_listen": "127.0.0.1:0", "registry": str(path), "unregistered": request.param}
    with RunningServe(settings.model_copy(update=update)) as running:
        yield running


def open_stream(serve: RunningServe, query: str) -> StreamReader:
    reader = StreamReader(f"{serve.url}/api/stream?{query}", serve.admin_token)
    wait_until(lambda: reader.named("hello"), what="the stream open")
    wait_until(
        lambda: reader.named("hello")[0]["connected"] or _live(serve), what="live subscription"
    )
    return reader


def _live(serve: RunningServe) -> bool:
    return bool(httpx.get(serve.url + "/healthz", timeout=5).json()["live_stream"])


def devices_seen(reader: StreamReader) -> dict[str, list[dict[str, Any]]]:
    seen: dict[str, list[dict[str, Any]]] = {}
    for batch in reader.named("readings"):
        for item in batch:
            seen.setdefault(item["device_id"], []).append(item)
    return seen


@pytest.mark.parametrize("registry_serve", ["reject"], indirect=True)
def test_readings_of_unregistered_and_revoked_devices_never_reach_a_stream(
    registry_serve: RunningServe, settings: Settings
) -> None:
    reader = open_stream(registry_serve, "tenant=t1")
    try:
        # The attackers first, then the legitimate device: once its reading is on the stream,
        # theirs (sent before it, on the same connection, in order) would have been too.
        publish_all(
            settings.mqtt_url,
            [
                reading(settings, "t1", "cow-stranger", 1),
                reading(settings, "t1", "cow-gone", 1),
                reading(settings, "t1", "cow-ok", 1),
            ],
        )
        wait_until(
            lambda: "cow-ok" in devices_seen(reader),
            what="the registered device's reading on its tenant's stream",
        )
        seen = devices_seen(reader)
        assert set(seen) == {"cow-ok"}, seen
        assert "registered" not in seen["cow-ok"][0]  # nothing to flag about a registered one
    finally:
        reader.close()


@pytest.mark.parametrize("registry_serve", ["reject"], indirect=True)
def test_a_device_revoked_while_serve_runs_is_cut_off_within_the_refresh(
    registry_serve: RunningServe, settings: Settings
) -> None:
    """Revoked while its connection stays up: each round sends its reading and then cow-mark's;
    once a round's marker arrives without it, the revocation has been seen, and it stays so."""
    reader = open_stream(registry_serve, "tenant=t1")

    def round_(seq: int) -> bool:
        """Whether cow-ok's reading of round `seq` reached the stream (before the marker)."""
        publish_all(
            settings.mqtt_url,
            [reading(settings, "t1", "cow-ok", seq), reading(settings, "t1", "cow-mark", seq)],
        )
        wait_until(
            lambda: any(r["seq"] == seq for r in devices_seen(reader).get("cow-mark", [])),
            what=f"the marker of round {seq}",
        )
        return any(r["seq"] == seq for r in devices_seen(reader).get("cow-ok", []))

    try:
        assert round_(1), "the device's reading before its revocation is shown"
        Registry(registry_serve.settings.registry).revoke_device("t1", "cow-ok")
        deadline = time.monotonic() + 10  # the hub reads the registry again every 2 s
        seq = 2
        while round_(seq):
            assert time.monotonic() < deadline, "the revoked device is still shown after 10 s"
            seq += 1
        assert not round_(seq + 1) and not round_(seq + 2)
    finally:
        reader.close()


@pytest.mark.parametrize("registry_serve", ["flag"], indirect=True)
def test_flag_shows_unregistered_devices_marked(
    registry_serve: RunningServe, settings: Settings
) -> None:
    """MOCLO_UNREGISTERED=flag: ingest stores such readings and notes the device; the stream
    shows them too, marked `"registered": false` so a dashboard can tell them apart."""
    reader = open_stream(registry_serve, "tenant=t1")
    try:
        publish_all(
            settings.mqtt_url,
            [reading(settings, "t1", "cow-stranger", 1), reading(settings, "t1", "cow-ok", 1)],
        )
        wait_until(
            lambda: devices_seen(reader).keys() >= {"cow-ok", "cow-stranger"},
            what="both readings on the stream",
        )
        seen = devices_seen(reader)
        assert seen["cow-stranger"][0]["registered"] is False
        assert "registered" not in seen["cow-ok"][0]
    finally:
        reader.close()


def forged_alert(tenant_in_payload: str, device_id: str, alert_id: str) -> bytes:
    ts = NOW * 10**9
    return Alert(
        alert_id=alert_id,
        state="raised",
        rule="fever",
        kind="threshold",
        severity="critical",
        tenant=tenant_in_payload,
        device_type="cow_tracker",
        device_id=device_id,
        value=41.0,
        message="fever: body temperature 41.0 °C",
        ts_ns=ts,
        first_seen_ns=ts,
        last_seen_ns=ts,
    ).to_json()


def test_an_alert_is_routed_by_its_topics_tenant_not_its_payloads(
    serve: RunningServe, settings: Settings
) -> None:
    """A change published on t1's alert topic whose payload says t2 is dropped: it reaches
    neither t2's stream (which it would poison) nor t1's (where it names a device of another
    tenant). Markers published after it, each on its own tenant's topic, prove it had time."""
    prefix = settings.topic_prefix
    t1 = open_stream(serve, "tenant=t1&readings=false")
    t2 = open_stream(serve, "tenant=t2&readings=false")
    try:
        publish_all(
            settings.mqtt_url,
            [
                (alert_topic(prefix, "t1", "cow-9"), forged_alert("t2", "cow-9", "0000000000f1")),
                (alert_topic(prefix, "t1", "cow-1"), forged_alert("t1", "cow-1", "00000000aa01")),
                (alert_topic(prefix, "t2", "cow-2"), forged_alert("t2", "cow-2", "00000000aa02")),
            ],
        )
        wait_until(lambda: t1.named("alert"), what="t1's own alert on t1's stream")
        wait_until(lambda: t2.named("alert"), what="t2's own alert on t2's stream")
        assert [a["id"] for a in t1.named("alert")] == ["00000000aa01"]
        assert [a["id"] for a in t2.named("alert")] == ["00000000aa02"]
    finally:
        t1.close()
        t2.close()


# -- how many streams, and what they cost --------------------------------------------------


def test_a_token_may_hold_a_bounded_number_of_streams(serve: RunningServe) -> None:
    """Cap+1 streams of one token: the last is refused with 429 saying why, while another
    token's stream opens (the positive control); closing one makes room again."""
    token, other = serve.token(["t1"], role="viewer"), serve.token(["t1"], role="viewer")
    # The streams are held without a reading thread, so closing one closes its socket at once
    # and serve sees it go; a reading thread would keep it until the next 15 s heartbeat.
    with contextlib.ExitStack() as held:
        client = held.enter_context(
            httpx.Client(
                base_url=serve.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
            )
        )
        streams = [
            held.enter_context(client.stream("GET", "/api/stream?tenant=t1"))
            for _ in range(MAX_STREAMS)
        ]
        assert [stream.status_code for stream in streams] == [200] * MAX_STREAMS
        refused = client.get("/api/stream")
        assert refused.status_code == 429
        assert f"{MAX_STREAMS} live streams" in refused.json()["error"]
        assert token not in refused.text
        assert stream_status(serve.url, other) == 200  # another token's stream opens
        streams[0].close()
        wait_until(
            lambda: stream_status(serve.url, token) == 200, what="room for a stream after a close"
        )


def test_the_fan_out_serialises_each_reading_once_whatever_the_number_of_streams(
    settings: Settings,
) -> None:
    """Each tick's newest readings are serialised once and shared: the work counted for 40
    devices is 40 whether 1 or 200 streams (of a few different filters) are open."""

    async def tick(streams: int) -> tuple[int, list[Stream]]:
        hub = LiveHub(settings)
        filters = [
            StreamFilter(),
            StreamFilter(tenants=frozenset({"t1"})),
            StreamFilter(tenants=frozenset({"t2"})),
            StreamFilter(tenants=frozenset({"t1"}), device_id="cow-3"),
        ]
        opened = []
        with contextlib.ExitStack() as stack:
            for n in range(streams):
                opened.append(stack.enter_context(hub.open_stream(filters[n % len(filters)])))
            for tenant in ("t1", "t2"):
                for n in range(20):
                    hub._on_telemetry(*reading(settings, tenant, f"cow-{n}", n))
            before = hub.readings_serialised
            hub.flush_once()
            return hub.readings_serialised - before, opened

    for streams in (1, 200):
        serialised, opened = asyncio.run(tick(streams))
        assert serialised == 40, (streams, serialised)
        for stream in opened:
            (event,) = [stream.queue.get_nowait() for _ in range(stream.queue.qsize())]
            sent = orjson.loads(event.data)
            wants = stream.wants
            expected = 40 if wants.tenants is None else 1 if wants.device_id else 20
            assert len(sent) == expected
            assert all(wants.admits(r["tenant"], r["device_id"]) for r in sent)
