"""The source's cheaper paho paths: the same messages as paho's own decoder, the same
acknowledgements, against a real Mosquitto."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import socket
import struct
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.mqtt import MqttEndpoint, make_client
from core.settings import Settings
from devices.topics import telemetry_subscription, telemetry_topic
from ingest.options import IngestOptions
from ingest.paho_fast import (
    PRIVATE_NAMES,
    FastClient,
    _ReadAhead,
    client_class,
    missing_private_names,
    publish_waking_once,
    release_sockets,
)
from ingest.source import Message, MqttSource
from moclo.stack import MosquittoServer
from tests.conftest import RunningIngest
from tests.helpers import Influx, await_disconnect, cow_json, publish_all, wait_until

T0 = int(time.time()) // 60 * 60 - 3600  # an hour ago: inside the accepted ts window


def _properties(**values: object) -> bytes:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(properties, name, value)
    return bytes(properties.pack())  # type: ignore[no-untyped-call]


def _publish_body(topic: bytes, qos: int, mid: int, properties: bytes, payload: bytes) -> bytes:
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", mid)
    return body + properties + payload


CASES = [
    ("qos1", b"p/farm/cow/c-1/telemetry", 1, 7, b"\x00", b'{"ts":1}'),
    ("qos0", b"p/farm/cow/c-1/telemetry", 0, 0, b"\x00", b'{"ts":1}'),
    ("empty payload", b"p/a", 1, 65535, b"\x00", b""),
    ("utf-8 topic", "p/ferme/vache/é/telemetry".encode(), 1, 3, b"\x00", b"x"),
    ("user property", b"p/a", 1, 9, _properties(UserProperty=[("k", "v")]), b"x"),
    ("message expiry", b"p/a", 1, 9, _properties(MessageExpiryInterval=60), b"{}"),
    ("payload looks like properties", b"p/a", 1, 1, b"\x00", b"\x02\x03\x00"),
]


@pytest.mark.parametrize(
    ("topic", "qos", "mid", "properties", "payload"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_publish_reaches_the_source_as_paho_decodes_it(
    topic: bytes, qos: int, mid: int, properties: bytes, payload: bytes
) -> None:
    client = FastClient(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, manual_ack=True)
    fast: list[tuple[str, bytes, int, int]] = []
    slow: list[tuple[str, bytes, int, int]] = []
    client.on_publishes_received = fast.extend
    client.on_message = lambda c, u, m: slow.append((m.topic, bytes(m.payload), m.mid, m.qos))
    header = paho.PUBLISH | (qos << 1)
    body = _publish_body(topic, qos, mid, properties, payload)
    client._in_packet["command"] = header
    client._in_packet["packet"] = bytearray(body)  # as paho reads it

    assert client._handle_publish() == paho.MQTT_ERR_SUCCESS

    expected = _packet.decode_publish(header, body, paho.MQTTv5)
    got = fast + slow
    assert got == [(expected.topic.decode(), expected.payload, expected.mid, expected.qos)]
    # Only what carries properties takes paho's own (slower) way, which keeps them.
    assert len(slow) == (properties != b"\x00")


def _received_topics(client: FastClient, topics: list[bytes]) -> list[str]:
    got: list[str] = []
    client.on_publishes_received = lambda items: got.extend(item[0] for item in items)
    for mid, topic in enumerate(topics, start=1):
        client._in_packet["command"] = paho.PUBLISH | (1 << 1)
        client._in_packet["packet"] = bytearray(_publish_body(topic, 1, mid, b"\x00", b"{}"))
        assert client._handle_publish() == paho.MQTT_ERR_SUCCESS
    return got


def test_a_topic_is_one_str_shared_by_its_messages_up_to_a_bound() -> None:
    client = FastClient(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, manual_ack=True)
    first, second, other = _received_topics(client, [b"p/f/cow/c-1/t", b"p/f/cow/c-1/t", b"p/x"])
    assert first == second == "p/f/cow/c-1/t" and first is second
    assert other == "p/x"

    # Past the bound (a flood of new topics), each message gets its own decoded topic.
    bounded = FastClient(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, manual_ack=True)
    bounded.topics_kept = 1
    kept, new, again = _received_topics(bounded, [b"p/a", b"p/b", b"p/b"])
    assert (kept, new, again) == ("p/a", "p/b", "p/b") and new is not again
    assert bounded._topics == {b"p/a": "p/a"}


def test_read_ahead_serves_small_reads_from_one_large_one() -> None:
    ours, theirs = socket.socketpair()
    try:
        ours.setblocking(False)
        sock = _ReadAhead(ours)
        theirs.sendall(b"\x30\x05hello\x40\x02")
        assert sock.recv(1) == b"\x30"
        assert sock.pending() == 8
        assert sock.recv(1) == b"\x05"
        assert sock.recv(5) == b"hello"
        assert sock.recv(10) == b"\x40\x02"  # no more than there is
        assert sock.pending() == 0
        with pytest.raises(BlockingIOError):
            sock.recv(1)
        assert sock.fileno() == ours.fileno()
        theirs.close()
        assert sock.recv(1) == b""  # the peer closed
    finally:
        ours.close()


def test_batched_acknowledgements_and_messages_with_properties(
    settings: Settings, mosquitto: MosquittoServer
) -> None:
    """Messages with and without properties arrive in order through both paths; a batch's
    acknowledgements are accepted by Mosquitto (nothing is delivered again on reconnect)."""
    prefix = settings.topic_prefix
    topic = telemetry_topic(prefix, "farm", "cow_tracker", "cow-1")
    expected = [f'{{"n":{i}}}'.encode() for i in range(600)]

    def publish(payloads: list[bytes]) -> None:
        endpoint = MqttEndpoint.from_url(settings.mqtt_url)
        client = make_client(endpoint, f"test-pub-{time.monotonic_ns()}")
        client.connect(endpoint.host, endpoint.port)
        client.loop_start()
        try:
            infos = []
            for i, payload in enumerate(payloads):
                properties = None
                if i % 7 == 0:
                    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                    properties.UserProperty = [("n", str(i))]
                infos.append(client.publish(topic, payload, qos=1, properties=properties))
            for info in infos:
                info.wait_for_publish(timeout=20)
        finally:
            client.disconnect()
            client.loop_stop()

    def source() -> MqttSource:
        return MqttSource(
            settings.mqtt,
            client_id=settings.ingest_id,
            subscription=telemetry_subscription(prefix),
            batch_messages=100,
            window=200,
        )

    async def drain(first: MqttSource, count: int) -> list[Message]:
        got: list[Message] = []
        while len(got) < count:
            batch = await asyncio.wait_for(first.next_batch(linger_s=0.05), 20)
            first.ack(batch)
            got.extend(batch)
        return got

    async def scenario() -> tuple[list[Message], list[Message]]:
        first = source()
        await first.start()
        try:
            await asyncio.to_thread(publish, expected)
            got = await drain(first, len(expected))
        finally:
            log_from = mosquitto.log_path.stat().st_size
            await first.close()
        await await_disconnect(  # before reconnecting with the same id: see the helper
            mosquitto.log_path, log_from, settings.ingest_id, "the first connection's DISCONNECT"
        )
        again = source()
        await again.start()
        try:
            await asyncio.to_thread(publish, [b"after"])
            after = await drain(again, 1)
        finally:
            await again.close()
        return got, after

    got, after = asyncio.run(scenario())
    assert [m.payload for m in got] == expected
    assert {m.topic for m in got} == {topic}
    assert [m.payload for m in after] == [b"after"]  # no unacknowledged message came back


def test_every_private_paho_name_paho_fast_uses_is_listed_and_present() -> None:
    """`PRIVATE_NAMES` is the one list: FastClient and release_sockets use no other private
    name of paho's, and the installed (pinned) paho has each, of the listed kind."""
    own = {"_topics", "_take_publishes", "_reads_publishes"}  # FastClient's own names
    source = inspect.getsource(FastClient) + inspect.getsource(release_sockets)
    source += inspect.getsource(publish_waking_once)
    used = set(re.findall(r"(?:self|super\(\)|client)\.(_[a-z]\w*)", source))
    used |= set(re.findall(r'getattr\(client, "(_[a-z]\w*)"', source))
    assert used - own == {name for name, _ in PRIVATE_NAMES}
    assert missing_private_names() == []
    assert client_class() is FastClient


def test_a_missing_or_changed_private_name_falls_back_to_the_stock_client_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Injected lists, so the real check runs while paho itself stays untouched.
    changed = (*PRIVATE_NAMES, ("_no_such_paho_method", "method"), ("_create_socket", "attribute"))
    assert missing_private_names(changed) == ["_no_such_paho_method", "_create_socket"]
    with caplog.at_level(logging.WARNING, logger="moclo.ingest.paho_fast"):
        assert client_class(changed) is paho.Client
        assert client_class(changed) is paho.Client
    [warning] = caplog.records
    assert "_no_such_paho_method, _create_socket" in warning.getMessage()
    assert "stock client" in warning.getMessage()


def test_ingest_on_pahos_stock_client_stores_every_reading_and_acknowledges_it(
    settings: Settings, influx: Influx
) -> None:
    """The fallback runs a real ingest: every reading stored exactly once, every message
    acknowledged (none comes back to the next run), the window's back-pressure included."""
    topics = [
        telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", f"cow-{n}") for n in range(5)
    ]
    messages = [(topics[seq % 5], cow_json(T0 + seq, seq)) for seq in range(600)]
    # A small window, so paho's thread waits in on_message while the consumer catches up.
    options = IngestOptions(linger_s=0.05, batch_messages=50, window=100, stock_mqtt_client=True)
    with RunningIngest(settings, options) as running:
        assert running.ingest is not None
        assert type(running.ingest.source._client) is paho.Client
        publish_all(settings.mqtt_url, messages)
        wait_until(lambda: running.stats.messages == 600, what="600 messages handled")
    assert influx.count("cow_tracker", "seq") == 600
    stored = influx.query('SELECT "seq" FROM "cow_tracker"')
    assert sorted(row["seq"] for row in stored) == list(range(600))
    assert influx.count("moclo_rejected", "error") == 0

    with RunningIngest(settings, options) as again:
        publish_all(settings.mqtt_url, [(topics[0], cow_json(T0 + 600, 600))])
        wait_until(lambda: again.stats.messages >= 1, what="the next reading handled")
        assert again.stats.messages == 1  # nothing unacknowledged was delivered again
    assert influx.count("cow_tracker", "seq") == 601


def test_ingests_publishing_connection_sends_without_nagles_delay(settings: Settings) -> None:
    """Commands and alert changes leave one at a time; with Nagle on, each waited for the
    broker's delayed ACK of the one before (40 ms). A plain client is the control."""
    from ingest.announce import Publisher

    async def nodelay_of_both() -> tuple[int, int]:
        publisher = Publisher(settings.mqtt, client_id="nagle-check", prefix="p")
        await publisher.start()
        plain = make_client(settings.mqtt, "nagle-control")
        plain.connect(settings.mqtt.host, settings.mqtt.port)
        try:
            mine = publisher._client.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            control = plain.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            return mine, control
        finally:
            plain.disconnect()
            await publisher.close()

    mine, control = asyncio.run(nodelay_of_both())
    assert mine != 0 and control == 0
