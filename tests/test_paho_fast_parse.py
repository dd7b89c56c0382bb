"""PUBLISH packets parsed straight out of the read-ahead buffer (`parse_publishes`), and the
reader around it: the same messages, in the same order, as paho's own reader gives, however
the bytes are split across reads and whatever other packets come between."""

from __future__ import annotations

import socket
import struct

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.paho_fast import FastClient, Publish, _ReadAhead, parse_publishes

TOPIC = b"p/farm/cow_tracker/cow-1/telemetry"


def _remaining_length(length: int) -> bytes:
    out = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _publish(
    topic: bytes, payload: bytes, *, qos: int = 1, mid: int = 1, properties: bytes = b"\x00"
) -> bytes:
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", mid)
    body += properties + payload
    return bytes([paho.PUBLISH | (qos << 1)]) + _remaining_length(len(body)) + body


def _user_property() -> bytes:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.UserProperty = [("k", "v")]
    return bytes(properties.pack())  # type: ignore[no-untyped-call]


PINGRESP = bytes([paho.PINGRESP, 0])


def _parse(buffer: bytes, start: int = 0, at_most: int = 1_000) -> tuple[list[Publish], int]:
    return parse_publishes(buffer, start, at_most, {}, 100)


# The header's length in bytes, by the body's size: 1 byte up to 127, 2 up to 16,383, 3 up to
# 2,097,151, 4 beyond.
LENGTHS = [("1 byte", 0), ("1 byte, largest", 127), ("2 bytes", 128), ("2 bytes, largest", 16383)]
LENGTHS += [("3 bytes", 16384), ("4 bytes", 2_097_152)]


@pytest.mark.parametrize("body_size", [size for _, size in LENGTHS], ids=[n for n, _ in LENGTHS])
def test_a_remaining_length_of_one_to_four_bytes_is_read(body_size: int) -> None:
    overhead = 2 + len(TOPIC) + 2 + 1
    payload = b"x" * max(0, body_size - overhead)
    packet = _publish(TOPIC, payload, mid=513)
    assert len(packet) - len(_remaining_length(len(packet))) - 1 >= body_size - overhead

    items, end = _parse(packet + PINGRESP)

    assert items == [(TOPIC.decode(), payload, 513, 1)]
    assert end == len(packet)  # it stopped at the PINGRESP, which is paho's


def test_a_packet_not_all_received_is_left_whole_for_pahos_reader() -> None:
    first = _publish(TOPIC, b'{"ts":1}', mid=1)
    second = _publish(TOPIC, b"y" * 200, mid=2)  # a two-byte remaining length
    stream = first + second
    for cut in range(len(first), len(stream)):
        items, end = _parse(stream[:cut])
        assert [item[2] for item in items] == [1], cut
        assert end == len(first), cut
    assert _parse(stream)[0][1][2] == 2


STOPS = [
    ("QoS 2", _publish(TOPIC, b"x", qos=2)),
    ("properties", _publish(TOPIC, b"x", properties=_user_property())),
    ("an empty topic (an alias)", _publish(b"", b"x")),
    ("a topic that is not UTF-8", _publish(b"p/\xff", b"x")),
    ("a PINGRESP", PINGRESP),
    ("a PUBACK", bytes([paho.PUBACK, 2, 0, 7])),
    ("a remaining length of five bytes", bytes([0x32, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]) + b"x" * 9),
    ("a topic longer than the packet", bytes([0x32, 5, 0, 9]) + b"abc"),
    ("no room for the packet id", bytes([0x32, 4, 0, 1]) + b"a" + b"\x00"),
]


@pytest.mark.parametrize("packet", [p for _, p in STOPS], ids=[n for n, _ in STOPS])
def test_anything_but_a_plain_publish_stops_the_parse_where_it_begins(packet: bytes) -> None:
    plain = _publish(TOPIC, b"{}", mid=4)
    items, end = _parse(plain + packet + plain)
    assert items == [(TOPIC.decode(), b"{}", 4, 1)]
    assert end == len(plain)


def test_qos_0_and_1_mixed_keep_their_order_and_ids_and_share_topic_strings() -> None:
    other = b"p/farm/cow_tracker/cow-2/telemetry"
    stream = _publish(TOPIC, b"a", qos=0) + _publish(other, b"b", mid=65535)
    stream += _publish(TOPIC, b"c", mid=2)
    topics: dict[bytes, str] = {}
    items, end = parse_publishes(b"junk" + stream, 4, 10, topics, 100)
    cow_1, cow_2 = TOPIC.decode(), other.decode()
    assert items == [(cow_1, b"a", 0, 0), (cow_2, b"b", 65535, 1), (cow_1, b"c", 2, 1)]
    assert end == 4 + len(stream)
    assert items[0][0] is items[2][0]  # one str per topic
    assert _parse(stream, at_most=2)[1] == len(stream) - len(_publish(TOPIC, b"c", mid=2))


# -- the reader around it: a real socket, bytes arriving in arbitrary pieces -----------------

KINDS = st.sampled_from(["qos0", "qos1", "properties", "pingresp"])


def _stream(kinds: list[str], payload_sizes: list[int]) -> tuple[bytes, list[Publish]]:
    data, expected = b"", []
    for n, (kind, size) in enumerate(zip(kinds, payload_sizes, strict=False)):
        topic = f"p/farm/cow_tracker/cow-{n % 3}/telemetry"
        payload = bytes([n % 256]) * size
        if kind == "pingresp":
            data += PINGRESP
            continue
        qos = 0 if kind == "qos0" else 1
        mid = 0 if qos == 0 else n + 1
        properties = _user_property() if kind == "properties" else b"\x00"
        data += _publish(topic.encode(), payload, qos=qos, mid=mid, properties=properties)
        expected.append((topic, payload, mid, qos))
    return data, expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(KINDS, min_size=1, max_size=25),
    sizes=st.lists(st.sampled_from([0, 1, 60, 200, 20_000]), min_size=25, max_size=25),
    cuts=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=30),
)
def test_the_reader_delivers_what_was_sent_however_it_is_split(
    kinds: list[str], sizes: list[int], cuts: list[int]
) -> None:
    """Cheap path and paho's reader together: every PUBLISH once, in order, with its topic,
    payload, packet id and QoS, whatever the reads' boundaries and the packets between."""
    data, expected = _stream(kinds, sizes)
    client = FastClient(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, manual_ack=True)
    got: list[Publish] = []
    client.on_publishes_received = got.extend
    client.on_message = lambda c, u, m: got.append((m.topic, bytes(m.payload), m.mid, m.qos))
    ours, theirs = socket.socketpair()
    try:
        ours.setblocking(False)
        client._sock = _ReadAhead(ours)
        position, turn = 0, 0
        while position < len(data):
            piece = cuts[turn % len(cuts)] * (1 + turn % 7)
            theirs.sendall(data[position : position + piece])
            position += piece
            turn += 1
            assert client.loop_read() == paho.MQTT_ERR_SUCCESS
        while client._sock.pending():
            assert client.loop_read() == paho.MQTT_ERR_SUCCESS
    finally:
        client._sock = None
        ours.close()
        theirs.close()
    assert got == expected
    assert client._in_packet["command"] == 0  # nothing left halfway


def test_the_end_of_the_stream_after_whole_packets_is_a_lost_connection_for_paho() -> None:
    """What was received before the broker closed is delivered; then paho sees the end of the
    stream as it would without the cheap path (a lost connection, reported once)."""
    client = FastClient(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, manual_ack=True)
    got: list[Publish] = []
    client.on_publishes_received = got.extend
    lost: list[object] = []
    client.on_disconnect = lambda c, u, flags, reason, p: lost.append(reason)
    ours, theirs = socket.socketpair()
    try:
        ours.setblocking(False)
        client._sock = _ReadAhead(ours)
        theirs.sendall(_publish(TOPIC, b"a", mid=1) + _publish(TOPIC, b"b", mid=2))
        theirs.close()
        rc = client.loop_read()
    finally:
        ours.close()
    assert [item[1] for item in got] == [b"a", b"b"]
    assert rc == paho.MQTT_ERR_CONN_LOST
    assert client._sock is None and len(lost) == 1
