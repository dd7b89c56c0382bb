"""Size limits and the loss window at the broker, on every configuration moclo ships or
generates (the `closed` fixture: `moclo up`'s, `moclo broker-auth write`'s lines, compose's
mosquitto.conf).

A device that publishes a packet over `max_packet_size` (ingest's 256 KiB payload limit plus
8 KiB for the topic and headers) is cut off by the broker, which closes its connection without
reading the packet: it never reaches ingest, and what ingest holds stays within its window plus
one packet of at most that size. A payload of exactly 256 KiB is delivered and stored (the
positive control); one a byte over it reaches ingest and is rejected as `payload_too_large`,
recorded with its reason, over MQTT 3.1.1 and 5 alike. (Not `message_size_limit`: Mosquitto
2.0.11 drops such a payload behind a plain PUBACK to an MQTT 3.1.1 device, a loss that neither
the device nor ingest would see.)
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from paho.mqtt.enums import MQTTProtocolVersion
from pydantic import SecretStr

from access.broker import (
    BROKER_SETTINGS,
    MAX_PACKET_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_QUEUED_BYTES,
    MAX_QUEUED_MESSAGES,
    BrokerAuth,
)
from core.settings import Settings
from devices.topics import telemetry_topic
from ingest.decode import DEFAULT_MAX_PAYLOAD_BYTES
from ingest.options import IngestOptions
from moclo.stack import MosquittoServer, free_port
from tests.conftest import RunningIngest
from tests.helpers import Influx, cow_json, wait_until
from tests.test_broker_access import Peer
from tests.test_client_id_takeover import T1, T2, Closed
from tests.test_client_id_takeover import closed as closed  # the fixture, for this module
from tests.test_compose_access import broker_config

COW = "cow_tracker"
CUT_OFF = -1  # Peer.publish: the connection closed before an answer


def padded(seq: int, size: int) -> bytes:
    """A valid cow reading of exactly `size` bytes (JSON allows the trailing spaces)."""
    reading = cow_json(int(time.time()) - 600 + seq, seq)
    return reading + b" " * (size - len(reading))


def test_the_broker_limits_agree_with_ingests() -> None:
    assert MAX_PAYLOAD_BYTES == DEFAULT_MAX_PAYLOAD_BYTES
    # Room for the longest topic (a prefix, two 63-character ids) and MQTT 5 headers.
    assert MAX_PACKET_BYTES - MAX_PAYLOAD_BYTES >= 4096
    # The bytes bound never cuts the count short for readings of up to 512 bytes.
    assert MAX_QUEUED_BYTES >= MAX_QUEUED_MESSAGES * 512


def test_every_config_sets_the_limits(tmp_path: Path, repo_root: Path) -> None:
    auth = BrokerAuth(tmp_path / "passwords", tmp_path / "acl")
    for server in (
        MosquittoServer(tmp_path / "up", 1883, password_file=auth.password_file),
        MosquittoServer(tmp_path / "open", 1883),  # the open broker too: it is about memory
    ):
        server.directory.mkdir()
        server.write_config()
        lines = server.config_path.read_text().splitlines()
        assert set(BROKER_SETTINGS) <= set(lines), server.config_path
    assert set(BROKER_SETTINGS) <= set(broker_config(repo_root))
    assert set(BROKER_SETTINGS) <= set(auth.config_lines())


def test_an_oversized_publish_is_refused_at_the_broker_and_never_reaches_ingest(
    closed: Closed, settings: Settings, influx: Influx
) -> None:
    broker = closed.broker
    user, password = closed.creds("the ingest")
    service = settings.model_copy(
        update={
            "mqtt_url": broker.url,
            "mqtt_username": user,
            "mqtt_password": SecretStr(password),
            "unregistered": "reject",
        }
    )
    window_bytes = 1024 * 1024
    options = IngestOptions(linger_s=0.05, window_bytes=window_bytes)
    with RunningIngest(service, options) as running:
        assert running.ingest is not None
        v5 = Peer(broker.port, "device D", closed.creds("device D"))
        old = Peer(
            broker.port,
            "device B 3.1.1",
            closed.creds("device B"),
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        d_topic = telemetry_topic(closed.prefix, T2, COW, "cow-d")
        b_topic = telemetry_topic(closed.prefix, T1, COW, "cow-b")
        try:
            # At the limit: delivered and stored, over both protocols (the positive control).
            assert v5.publish(d_topic, padded(1, MAX_PAYLOAD_BYTES)) == 0
            assert old.publish(b_topic, padded(2, MAX_PAYLOAD_BYTES)) == 0
            # One byte over: within the packet bound, so ingest gets it and rejects it with
            # its reason (below); nothing is dropped behind the device's back.
            assert v5.publish(d_topic, padded(3, MAX_PAYLOAD_BYTES + 1)) == 0
            assert old.publish(b_topic, padded(4, MAX_PAYLOAD_BYTES + 1)) == 0
            assert not old.disconnected.is_set() and not v5.disconnected.is_set()
            # A marker from each, then what a flooding device tries: 16 MB in one packet.
            assert v5.publish(d_topic, padded(5, 300)) == 0
            assert old.publish(b_topic, padded(6, 300)) == 0
            for peer, topic in ((v5, d_topic), (old, b_topic)):
                assert peer.publish(topic, b" " * (16 * 1024 * 1024)) == CUT_OFF  # unread
                assert peer.disconnected.is_set()
        finally:
            v5.close()
            old.close()
        wait_until(lambda: influx.count(COW, "seq") == 4, what="the four allowed readings stored")
        rows = influx.query(f'SELECT seq FROM "{COW}"')
        assert sorted(int(row["seq"]) for row in rows) == [1, 2, 5, 6]
        # The two a byte over were rejected with their reason, one each; the 16 MB packets
        # never reached ingest, and what it holds is bounded by its window plus one packet.
        wait_until(lambda: influx.count("moclo_rejected", "error") == 2, what="the two rejections")
        rejected = influx.query('SELECT "error", "reason" FROM "moclo_rejected"')
        assert [row["reason"] for row in rejected] == ["payload_too_large"] * 2
        assert running.ingest.source.messages_received == 6
        port = running.ingest.http_port
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        pending = int(float(metrics.split("\nmoclo_pending_bytes ")[1].split()[0]))
        assert 0 <= pending <= window_bytes + MAX_PACKET_BYTES


def test_what_the_broker_acknowledged_survives_a_kill_9_after_its_next_save(
    tmp_path: Path,
) -> None:
    """The broker's own loss window: a kill -9 loses what it took since its last save, and it
    saves every `autosave_interval` + 1 s. Readings queued for an offline session, then two
    saves (the first one seen may have been written before the last PUBACK: the file is
    sampled), then kill -9 and a restart: the session gets every one of them. The broker saves
    every second here, so the two saves take about 4 s instead of 12; that every shipped
    config says AUTOSAVE_INTERVAL_S is test_every_config_sets_the_limits's."""
    interval_s = 1
    broker = MosquittoServer(tmp_path / "mq", free_port(), autosave_interval_s=interval_s)
    broker.start()

    def holder() -> Peer:
        """A persistent session (MQTT 3.1.1: kept until it connects again with clean start)."""
        v3 = MQTTProtocolVersion.MQTTv311
        return Peer(broker.port, "holder", None, protocol=v3, client_id="h", clean_start=False)

    session = holder()
    try:
        assert session.subscribe("t/#") == [1]
        session.close()
        publisher = Peer(broker.port, "publisher", None)
        payloads = [padded(seq, 300) for seq in range(1, 101)]
        assert {publisher.publish("t/cow", p) for p in payloads} == {0}
        publisher.close()
        saved = broker.directory / "data" / "mosquitto.db"
        inodes = [saved.stat().st_ino if saved.exists() else 0]

        def saves() -> int:
            current = saved.stat().st_ino if saved.exists() else 0
            if current != inodes[-1]:
                inodes.append(current)
            return len(inodes) - 1

        wait_until(
            lambda: saves() >= 2,
            timeout_s=2 * (interval_s + 1) + 5,
            what="two saves of the broker's state",
        )
        broker.kill()
        broker.start()
        session = holder()
        wait_until(lambda: len(session.messages) >= 100, what="the queued readings redelivered")
        assert sorted(p for _, p in session.messages) == sorted(payloads)
    finally:
        session.close()
        broker.stop()
