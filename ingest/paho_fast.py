"""paho-mqtt's receive and acknowledge paths, made cheap enough for ingest's source.

Measured on a backlog of small QoS 1 messages, stock paho 2.2 spends about 30 µs of the GIL
per message before ingest sees it: one select() and three recv() calls per packet (the
command byte, each length byte, the body), an MQTT 5 `Properties` object built and cleared
per PUBLISH even when it has no properties, an `MQTTMessage`, a topic-filter walk and two
mutexes; and each acknowledgement is its own queued packet, socket wake-up and send(). This
subclass keeps paho's connection handling (connect, reconnect, keepalive, QoS 2, TLS) and
changes only that:

- reads go through `_ReadAhead`, which serves paho's small reads from one large recv() and
  reports what it holds as `pending()` (the hook paho already uses for TLS), so a burst of
  packets costs one select() and one recv();
- one select() reads up to `_READ_BURST` packets instead of one;
- a QoS 0/1 PUBLISH without properties (what Mosquitto sends to a subscriber that asked for
  no topic aliases) is parsed straight out of that buffer when it is wholly there
  (`parse_publishes`: no per-packet reader state, recv() calls or mutexes), and the packets
  of one read are handed on together to `on_publishes_received([(topic, payload, mid,
  qos), ...])`; one split across two reads takes paho's reader and then the same callback;
  anything else (properties, QoS 2, a topic that is not UTF-8, a malformed packet, any
  other packet type) goes through paho's own reader, `_handle_publish` and `on_message`;
- the topic strings of that path are shared: one str per topic (up to `_TOPICS_KEPT` topics),
  not one per message, since a window of 10,000 waiting messages would otherwise hold 10,000
  copies of a few hundred device topics (1.4 MB of a 14 MB peak, traced);
- `ack_many` queues the PUBACKs of a whole batch as one write, in the order given.

It relies on private paho names, every one listed in `PRIVATE_NAMES` with its kind. paho-mqtt
is pinned to the minor version the tests cover (pyproject.toml; `tests/test_paho_fast.py`
checks the parsing against paho's own decoder and the whole path against a real Mosquitto),
and `client_class()` checks the names at start-up: if any is missing, ingest runs on paho's
stock client instead, slower and losing nothing, with one warning naming what is missing.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeGuard

import paho.mqtt.client as paho
from paho.mqtt import __version__ as paho_version
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

log = logging.getLogger("moclo.ingest.paho_fast")

_CHUNK = 256 * 1024  # one recv(); a batch of small messages fits many times over
_READ_BURST = 1_000  # packets per select() at most, so writes and keepalive are not starved
_PUBACK = struct.Struct("!HH")  # fixed header 0x40, remaining length 2, packet id
_PUBACK_HEAD = 0x4002
_TOPICS_KEPT = 100_000  # distinct topics shared; beyond that (a flood of new ones) each is decoded

# A received PUBLISH: topic, payload, packet id (0 at QoS 0), QoS.
Publish = tuple[str, bytes, int, int]
# Takes the PUBLISH packets of one read, in order; called on paho's network thread, like
# on_message.
PublishesCallback = Callable[[list[Publish]], None]

# A method is looked up on paho's Client class; an attribute, which paho sets in __init__, on
# an instance of it.
PrivateKind = Literal["method", "attribute"]

# Every private paho name this module uses, in one place: `client_class()` checks each before
# FastClient is used, so a paho release that renames one costs speed, not readings.
PRIVATE_NAMES: tuple[tuple[str, PrivateKind], ...] = (
    ("_create_socket", "method"),  # overridden: wraps each new socket in `_ReadAhead`
    ("_transport", "attribute"),  # "tcp" or "websockets": websockets keep paho's own reads
    ("_sock", "attribute"),  # the connection's socket, None when not connected (loop_read)
    ("_packet_read", "method"),  # reads one packet; loop_read calls it up to _READ_BURST times
    ("_loop_rc_handle", "method"),  # what loop_read does with a read error, as paho does
    ("_handle_publish", "method"),  # overridden: the cheap PUBLISH path, else paho's own
    ("_protocol", "attribute"),  # the MQTT version: the cheap path parses MQTT 5 only
    ("_in_packet", "attribute"),  # the packet just read: its "command" byte and "packet" body
    ("_packet_queue", "method"),  # queues bytes to send: ack_many's one write of PUBACKs
    ("_reset_sockets", "method"),  # closes loop_start()'s wake-up sockets (release_sockets)
    ("_msgtime_mutex", "attribute"),  # guards the next one, as paho's reader does
    ("_last_bytes_received", "attribute"),  # keepalive's clock, set as paho's reader sets it
    ("_sockpairW", "attribute"),  # loop_start()'s wake-up socket: publish_waking_once
)


class _ReadAhead:
    """A socket whose recv() is served from one large read; everything else is the socket's."""

    __slots__ = ("_sock", "buffer", "position")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.buffer = b""  # the last large read; bytes before `position` are consumed
        self.position = 0

    def recv(self, size: int) -> bytes:
        start = self.position
        if start >= len(self.buffer):
            data: bytes = self._sock.recv(_CHUNK)  # raises BlockingIOError when nothing came
            if len(data) <= size:
                self.buffer, self.position = b"", 0
                return data  # also b"" when the peer closed
            self.buffer, start = data, 0
        end = min(start + size, len(self.buffer))
        self.position = end
        return self.buffer[start:end]

    def fill(self) -> None:
        """Reads what has arrived into the buffer, once everything in it has been read (so
        nothing is dropped); raises as recv() does. b"" (the peer closed) leaves it empty, and
        paho's next recv() meets the end of the stream itself."""
        if self.position >= len(self.buffer):
            self.buffer, self.position = self._sock.recv(_CHUNK), 0

    def pending(self) -> int:
        """Bytes received but not yet read; paho does not wait in select() while any are."""
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self.buffer) - self.position + inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class FastClient(paho.Client):
    """A paho client (MQTT 5) with a cheap path for received PUBLISH packets; see the module."""

    on_publishes_received: PublishesCallback | None = None
    topics_kept = _TOPICS_KEPT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._topics: dict[bytes, str] = {}  # the encoded topic → its one str

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        return sock if self._transport == "websockets" else _ReadAhead(sock)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        # paho reads one packet per select(); with `_ReadAhead` the rest are already here.
        # The plain PUBLISH packets wholly in its buffer are parsed there (`_take_publishes`);
        # paho's reader takes any other packet, and one not all received yet.
        read = 0
        while read < _READ_BURST:
            sock = self._sock
            if sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            if self._reads_publishes(sock):
                read += self._take_publishes(sock, _READ_BURST - read)
                if read >= _READ_BURST:
                    break
                if sock.position >= len(sock.buffer):
                    # All taken: read on here, or paho's reader would take each read's first
                    # packet the slow way (most of them, when messages trickle in).
                    try:
                        sock.fill()
                    except BlockingIOError:
                        break  # nothing more has come: back to select()
                    except OSError:
                        pass  # the connection failed: paho's reader meets it again below
                    else:
                        if sock.buffer:
                            continue
            rc = self._packet_read()
            read += 1
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                break
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _reads_publishes(self, sock: Any) -> TypeGuard[_ReadAhead]:
        """Whether `_take_publishes` may read `sock` now: ours, with paho not halfway through
        a packet, a handler for them, and MQTT 5 (the only packet layout it parses)."""
        return (
            type(sock) is _ReadAhead
            and self._in_packet["command"] == 0
            and self.on_publishes_received is not None
            and self._protocol == paho.MQTTv5
        )

    def _take_publishes(self, sock: _ReadAhead, at_most: int) -> int:
        """Parses up to `at_most` plain PUBLISH packets (QoS 0 or 1, no properties, a UTF-8
        topic) from the head of the read-ahead buffer and hands them on in one call; stops at
        the first packet that is anything else or not wholly received, which paho's reader
        then takes as before. Returns how many it took."""
        items, end = parse_publishes(
            sock.buffer, sock.position, at_most, self._topics, self.topics_kept
        )
        if not items:
            return 0
        sock.position = end
        with self._msgtime_mutex:  # what paho's reader does per packet: keepalive's clock
            self._last_bytes_received = time.monotonic()
        assert self.on_publishes_received is not None
        self.on_publishes_received(items)
        return len(items)

    def _handle_publish(self) -> MQTTErrorCode:
        handler = self.on_publishes_received
        if handler is None or self._protocol != paho.MQTTv5:
            return super()._handle_publish()
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        packet = self._in_packet["packet"]
        topics = self._topics
        try:
            end = 2 + ((packet[0] << 8) | packet[1])
            encoded = bytes(packet[2:end])
            shared = topics.get(encoded)
            if shared is None:
                shared = encoded.decode()
                if len(topics) < self.topics_kept:
                    topics[encoded] = shared
            topic = shared
            mid = 0
            if qos:
                mid = (packet[end] << 8) | packet[end + 1]
                end += 2
            has_properties = packet[end] != 0
        except (IndexError, UnicodeDecodeError):
            has_properties = True  # paho reports it as it always does
        if qos > 1 or has_properties:
            return super()._handle_publish()
        # One copy of the payload (a slice of paho's bytearray, then bytes(), would be two).
        with memoryview(packet) as view:
            payload = bytes(view[end + 1 :])
        handler([(topic, payload, mid, qos)])
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: Iterable[int]) -> None:
        """Queues one PUBACK (success, no properties) per packet id, in order, as one write.

        Only for QoS 1 messages received with `manual_ack=True`."""
        packet = b"".join([_PUBACK.pack(_PUBACK_HEAD, mid) for mid in mids])
        if packet:
            self._packet_queue(paho.PUBACK, packet, 0, 0)


def parse_publishes(
    buffer: bytes, start: int, at_most: int, topics: dict[bytes, str], topics_kept: int
) -> tuple[list[Publish], int]:
    """The plain PUBLISH packets (QoS 0 or 1, no properties, a non-empty UTF-8 topic) wholly
    in `buffer` from `start` on, up to `at_most`, and where the first one not taken begins: it
    stops at a packet that is anything else, malformed or not all received yet, and leaves
    that to paho's reader, which keeps what paho does with it (properties, QoS 2, errors).

    `topics` shares one str per topic, as `FastClient._handle_publish` does, up to
    `topics_kept` topics. The hot loop of ingest's intake: no call per packet but the slices.
    """
    items: list[Publish] = []
    append = items.append
    size = len(buffer)
    position = start
    while len(items) < at_most and position + 1 < size:
        header = buffer[position]
        qos = (header >> 1) & 3
        if header & 0xF0 != paho.PUBLISH or qos > 1:
            break
        # The remaining length: 1 to 4 bytes of 7 bits, least significant first.
        index = position + 1
        byte = buffer[index]
        length = byte & 0x7F
        index += 1
        shift = 7
        while byte & 0x80:
            if index >= size or shift > 21:
                length = -1  # not all here yet, or malformed (a fifth byte): paho's
                break
            byte = buffer[index]
            index += 1
            length |= (byte & 0x7F) << shift
            shift += 7
        end = index + length
        if length < 3 or end > size:
            break
        topic_end = index + 2 + ((buffer[index] << 8) | buffer[index + 1])
        cursor = topic_end + 2 if qos else topic_end  # the properties' length
        if topic_end == index + 2 or cursor >= end or buffer[cursor] != 0:
            break  # an empty topic (an alias), properties, or lengths that do not add up
        encoded = buffer[index + 2 : topic_end]
        topic = topics.get(encoded)
        if topic is None:
            try:
                topic = encoded.decode()
            except UnicodeDecodeError:
                break
            if len(topics) < topics_kept:
                topics[encoded] = topic
        mid = ((buffer[topic_end] << 8) | buffer[topic_end + 1]) if qos else 0
        append((topic, buffer[cursor + 1 : end], mid, qos))
        position = end
    return items, position


def missing_private_names(names: Iterable[tuple[str, PrivateKind]] = PRIVATE_NAMES) -> list[str]:
    """The names paho's Client lacks, or has as another kind than listed."""
    probe = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)  # opens no socket
    missing = []
    for name, kind in names:
        if kind == "method":
            present = callable(getattr(paho.Client, name, None))
        else:
            present = hasattr(probe, name) and not callable(getattr(probe, name))
        if not present:
            missing.append(name)
    return missing


@functools.cache
def client_class(names: tuple[tuple[str, PrivateKind], ...] = PRIVATE_NAMES) -> type[paho.Client]:
    """FastClient if paho has every private name it uses; otherwise paho's stock client, with
    one warning (once per process) naming what is missing. `names` is for tests."""
    missing = missing_private_names(names)
    if not missing:
        return FastClient
    log.warning(
        "paho-mqtt %s lacks %s, private names ingest's fast MQTT path relies on "
        "(ingest/paho_fast.py lists them); using paho's stock client instead: slower, and "
        "nothing is lost. Install the paho-mqtt version pyproject.toml pins to get it back.",
        paho_version,
        ", ".join(missing),
    )
    return paho.Client


class _Muted:
    """Stands in for paho's wake-up socket while `publish_waking_once` queues a batch. Not
    None: paho's `_packet_queue`, run by any thread that queues a packet (paho's own network
    thread too: a PINGREQ, a resend after a reconnect), checks the attribute for None and
    then sends on it; a thread between the two must find something to send on."""

    __slots__ = ()

    def send(self, data: bytes) -> int:
        return len(data)  # the batch's one wake-up follows, after every packet is queued

    def close(self) -> None:
        pass


_MUTED = _Muted()


def publish_waking_once(
    client: paho.Client, messages: Iterable[tuple[str, bytes, bool]]
) -> list[paho.MQTTMessageInfo]:
    """Publishes each (topic, payload, retain) at QoS 1, in order, and wakes paho's network
    thread once for them all. paho's publish() writes a byte to `loop_start()`'s wake-up socket
    per message: a send() and a switch to its thread each, 4 % of ingest's CPU on cow trackers,
    whose alert changes go out two messages each. The socket is swapped for `_Muted` while
    the messages are queued, then put back and woken once: that one wake-up comes after every
    packet queued meanwhile, by any thread. Without it (not started, or a paho lacking the
    name) each wakes it."""
    wake = getattr(client, "_sockpairW", None)
    if wake is _MUTED:
        wake = None  # another thread's batch is being queued: its wake-up covers this one's
    if wake is not None:
        client._sockpairW = _MUTED  # type: ignore[assignment]  # has what paho uses of it
    try:
        return [
            client.publish(topic, payload, qos=1, retain=retain)
            for topic, payload, retain in messages
        ]
    finally:
        now: object = client._sockpairW
        if wake is not None and now is _MUTED:  # not closed (release_sockets) meanwhile
            client._sockpairW = wake
            with contextlib.suppress(BlockingIOError):  # full: the thread is awake already
                wake.send(b"0")


def release_sockets(client: paho.Client) -> None:
    """Closes what paho's `loop_start()` opened, after `loop_stop()`: paho leaves its wake-up
    socket pair open until the client is garbage collected, which a reference cycle through
    its callbacks delays to some later collection (where the sockets warn as unclosed)."""
    reset = getattr(client, "_reset_sockets", None)
    if reset is not None:  # a paho without it (see PRIVATE_NAMES) closes them when collected
        reset()
