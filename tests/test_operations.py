"""Operations: /healthz and /metrics, backpressure when the spool is full, the cardinality guard.
Failures are provoked for real: a stopped broker, a stopped InfluxDB, a tiny spool."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.mqtt import make_client
from core.settings import Settings
from devices.topics import telemetry_topic
from ingest.decode import Limits
from ingest.options import IngestOptions
from moclo.stack import InfluxServer, MosquittoServer, free_port
from tests.conftest import RunningIngest
from tests.helpers import Influx, cow_json, publish_all, wait_until

NOW = int(time.time())


def cow(device: str, seq: int, settings: Settings) -> tuple[str, bytes]:
    topic = telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", device)
    return topic, cow_json(NOW - 600 + seq, seq)


def get(running: RunningIngest, path: str) -> httpx.Response:
    assert running.ingest is not None and running.ingest.http_port
    return httpx.get(f"http://127.0.0.1:{running.ingest.http_port}{path}", timeout=5)


@pytest.fixture
def own_servers(tmp_path: Path) -> Iterator[tuple[MosquittoServer, InfluxServer]]:
    """A broker and a database this test may stop and start."""
    broker = MosquittoServer(tmp_path / "mq", free_port())
    database = InfluxServer(tmp_path / "ix", free_port())
    broker.start()
    database.start()
    yield broker, database
    broker.stop()
    database.stop()


def test_healthz_and_metrics_report_what_happened(
    settings: Settings, ingest: RunningIngest
) -> None:
    publish_all(
        settings.mqtt_url,
        [cow("cow-1", i, settings) for i in range(5)] + [(cow("cow-1", 9, settings)[0], b"{bad")],
    )
    wait_until(lambda: ingest.stats.messages == 6, what="6 messages handled")
    health = get(ingest, "/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["ok"] is True and body["status"] == "ok" and body["mqtt_connected"] is True
    metrics = get(ingest, "/metrics").text
    assert "moclo_messages_handled_total 6.0" in metrics
    assert "moclo_readings_stored_total 5.0" in metrics
    assert 'moclo_rejected_total{reason="bad_json"} 1.0' in metrics
    assert "moclo_mqtt_connected 1.0" in metrics
    assert "moclo_write_duration_seconds_count" in metrics
    assert get(ingest, "/nope").status_code == 404


def test_healthz_says_not_consuming_while_the_broker_is_gone(
    settings: Settings, own_servers: tuple[MosquittoServer, InfluxServer]
) -> None:
    broker, database = own_servers
    mine = settings.model_copy(update={"mqtt_url": broker.url, "influx_url": database.url})
    with RunningIngest(mine, IngestOptions(linger_s=0.05)) as running:
        assert get(running, "/healthz").status_code == 200
        broker.stop()
        unhealthy = wait_until(
            lambda: (r := get(running, "/healthz")).status_code == 503 and r,
            what="503 while disconnected",
        )
        assert unhealthy.json()["status"].startswith(
            "not consuming: disconnected from the MQTT broker"
        )
        broker.start()
        wait_until(
            lambda: get(running, "/healthz").status_code == 200,
            timeout_s=40,
            what="healthy again after reconnecting",
        )
        publish_all(broker.url, [cow("cow-1", 1, mine)])
        wait_until(lambda: running.stats.readings_stored == 1, what="consuming again")


def test_a_full_spool_stops_intake_and_health_says_so_until_influxdb_returns(
    settings: Settings, own_servers: tuple[MosquittoServer, InfluxServer]
) -> None:
    broker, database = own_servers
    mine = settings.model_copy(update={"mqtt_url": broker.url, "influx_url": database.url})
    options = IngestOptions(
        linger_s=0.01, batch_messages=10, window=50, spool_max_bytes=1, stall_after_s=1
    )
    with RunningIngest(mine, options) as running:
        database.stop()
        publish_all(broker.url, [cow(f"cow-{i % 5}", i, mine) for i in range(300)])
        stalled = wait_until(
            lambda: (r := get(running, "/healthz")).status_code == 503 and r,
            what="503: messages waiting, none handled",
        )
        assert "messages waiting" in stalled.json()["status"]
        # Backpressure: the broker's window bounds what ingest holds; the rest waits there.
        assert stalled.json()["pending_messages"] <= 50
        assert running.stats.messages < 300
        database.start()
        wait_until(lambda: running.stats.messages == 300, timeout_s=60, what="all handled")
        wait_until(lambda: get(running, "/healthz").status_code == 200, what="healthy again")
    assert Influx(database.url, mine.influx_db).count("cow_tracker", "seq") == 300


def test_the_window_bounds_the_bytes_waiting_not_only_the_messages(
    settings: Settings, own_servers: tuple[MosquittoServer, InfluxServer]
) -> None:
    """Arrays of readings: a window of 1,000 messages would let ingest hold 100 arrays; its
    16 KiB of payload holds a handful, and the broker keeps the rest."""
    broker, database = own_servers
    mine = settings.model_copy(update={"mqtt_url": broker.url, "influx_url": database.url})
    window_bytes = 16 * 1024
    options = IngestOptions(
        linger_s=0.01,
        batch_messages=10,
        batch_bytes=4096,
        window=1000,
        window_bytes=window_bytes,
        spool_max_bytes=1,
        stall_after_s=1,
    )
    topic = cow("cow-1", 0, mine)[0]
    arrays = [
        (
            topic,
            b"["
            + b",".join(cow_json(NOW - 3600 + 20 * n + i, 20 * n + i) for i in range(20))
            + b"]",
        )
        for n in range(100)
    ]
    largest = max(len(payload) for _, payload in arrays)
    with RunningIngest(mine, options) as running:
        database.stop()
        publish_all(broker.url, arrays)
        wait_until(lambda: get(running, "/healthz").status_code == 503, what="intake stalled")
        metrics = get(running, "/metrics").text
        pending_bytes = int(float(metrics.split("\nmoclo_pending_bytes ")[1].split()[0]))
        assert 0 < pending_bytes < window_bytes + largest  # the last one in may tip it over
        assert running.ingest is not None
        received = running.ingest.source.messages_received
        # What waits (at most 7 of these arrays) and three batches of 2 (by batch_bytes): the
        # one spooled, the one waiting for the spool to have room, the one decoded behind it.
        # The other 85-odd stay at the broker.
        assert received <= 13, received
        database.start()
        wait_until(lambda: running.stats.messages == 100, timeout_s=60, what="all handled")
    assert Influx(database.url, mine.influx_db).count("cow_tracker", "seq") == 2000


def test_the_cardinality_guard_refuses_a_flood_of_new_devices(
    settings: Settings, influx: Influx
) -> None:
    limits = Limits(new_devices_burst=3, new_devices_per_minute=0)
    with RunningIngest(settings, IngestOptions(linger_s=0.05, limits=limits)) as running:
        publish_all(settings.mqtt_url, [cow(f"cow-{i}", 1, settings) for i in range(10)])
        publish_all(settings.mqtt_url, [cow("cow-0", 2, settings)])  # known: still welcome
        wait_until(lambda: running.stats.messages == 11, what="11 handled")
    assert influx.count("cow_tracker", "seq") == 4
    assert influx.count("moclo_rejected", "error", "reason = 'cardinality_limit'") == 7


def test_a_clean_stop_stores_and_acknowledges_everything_that_arrived(
    settings: Settings, influx: Influx
) -> None:
    options = IngestOptions(linger_s=0.5, batch_messages=100)
    with RunningIngest(settings, options) as running:
        publish_all(settings.mqtt_url, [cow(f"cow-{i % 20}", i, settings) for i in range(1000)])
        assert running.ingest is not None
        source = running.ingest.source
        wait_until(lambda: source.messages_received == 1000, what="all 1000 received")
    assert running.stats.messages == 1000
    assert influx.count("cow_tracker", "seq") == 1000

    # Nothing is left unacknowledged in ingest's session: resuming it, the first message to
    # arrive is a marker published now, not a redelivery.
    received: list[str] = []
    client = make_client(settings.mqtt, settings.ingest_id)
    client.on_message = lambda c, u, m: received.append(m.topic)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 60
    client.connect(settings.mqtt.host, settings.mqtt.port, clean_start=False, properties=properties)
    client.loop_start()
    try:
        marker = telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", "marker")
        publish_all(settings.mqtt_url, [(marker, b"{}")])
        wait_until(lambda: marker in received, what="the marker")
    finally:
        client.disconnect()
        client.loop_stop()
    assert received == [marker]


def test_refused_readings_while_the_spool_is_full_do_not_wedge_the_drainer(
    settings: Settings, own_servers: tuple[MosquittoServer, InfluxServer]
) -> None:
    broker, database = own_servers
    mine = settings.model_copy(update={"mqtt_url": broker.url, "influx_url": database.url})
    influx = Influx(database.url, mine.influx_db)
    # `activity` was once written as a float: InfluxDB will refuse our integer readings.
    influx.write([f"cow_tracker,device_id=old,tenant=farm activity=1.5 {(NOW - 700) * 10**9}"])
    options = IngestOptions(linger_s=0.01, batch_messages=10, window=50, spool_max_bytes=1)
    with RunningIngest(mine, options) as running:
        database.stop()
        publish_all(broker.url, [cow(f"cow-{i % 5}", i, mine) for i in range(60)])
        wait_until(lambda: running.stats.readings_spooled > 0, what="a batch in the spool")
        database.start()
        wait_until(lambda: running.stats.messages == 60, timeout_s=60, what="all handled")
    assert influx.count("moclo_rejected", "error", "reason = 'storage_refused'") == 60


def test_stopping_while_waiting_for_spool_room_and_the_spool_after_a_restart(
    settings: Settings, own_servers: tuple[MosquittoServer, InfluxServer]
) -> None:
    broker, database = own_servers
    mine = settings.model_copy(update={"mqtt_url": broker.url, "influx_url": database.url})
    options = IngestOptions(linger_s=0.01, batch_messages=10, window=50, spool_max_bytes=1)
    with RunningIngest(mine, options) as running:
        Influx(database.url, mine.influx_db).write([])  # the database exists
        database.stop()
        publish_all(broker.url, [cow(f"cow-{i % 5}", i, mine) for i in range(100)])
        wait_until(lambda: running.stats.readings_spooled > 0, what="a batch in the spool")
        assert running.ingest is not None
        source = running.ingest.source
        wait_until(lambda: source.pending_count > 0, what="more waiting behind the full spool")
    # RunningIngest's exit returned: the stop did not hang waiting for spool room.
    assert running.stats.messages < 100
    database.start()
    with RunningIngest(mine, options) as again:
        # The spooled batch is written, and the broker redelivers the rest.
        wait_until(
            lambda: Influx(database.url, mine.influx_db).count("cow_tracker", "seq") == 100,
            timeout_s=60,
            what="all 100 stored after the restart",
        )
        # Counted once a write is answered, a moment after the rows are readable.
        wait_until(
            lambda: again.stats.readings_stored >= 100 - running.stats.readings_spooled,
            what="the restarted ingest to count what it stored",
        )


def test_a_backlog_at_the_first_look_is_not_a_stall_until_stall_after_s(tmp_path: Path) -> None:
    """Ingest that just started, with messages waiting and no batch handled yet, is taking a
    backlog: it was reported stuck "for 60 s or more" at once (a flaky fault test found it)."""
    from ingest.health import Liveness, assess
    from ingest.spool import Spool

    spool = Spool(tmp_path / "spool")
    liveness = Liveness(connected=True, pending=500, started=100.0)
    assert assess(liveness, spool, stall_after_s=60, now=101.0).ok
    stuck = assess(liveness, spool, stall_after_s=60, now=161.0)  # the control: a real stall
    assert not stuck.ok and "none handled for 60s" in stuck.status
    liveness.last_handled = 150.0
    assert assess(liveness, spool, stall_after_s=60, now=161.0).ok
