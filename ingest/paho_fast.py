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
  no topic aliases) is split by slicing and handed to `on_publish_received(topic, payload,
  mid, qos)`; anything else (properties, QoS 2, a topic that is not UTF-8, a malformed
  packet) goes through paho's own `_handle_publish` and `on_message` unchanged;
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

import functools
import logging
import struct
from collections.abc import Callable, Iterable
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt import __version__ as paho_version
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

log = logging.getLogger("moclo.ingest.paho_fast")

_CHUNK = 256 * 1024  # one recv(); a batch of small messages fits many times over
_READ_BURST = 1_000  # packets per select() at most, so writes and keepalive are not starved
_PUBACK = struct.Struct("!HH")  # fixed header 0x40, remaining length 2, packet id
_PUBACK_HEAD = 0x4002
_TOPICS_KEPT = 100_000  # distinct topics shared; beyond that (a flood of new ones) each is decoded

# topic, payload, packet id, QoS; called on paho's network thread, like on_message.
PublishCallback = Callable[[str, bytes, int, int], None]

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
)


class _ReadAhead:
    """A socket whose recv() is served from one large read; everything else is the socket's."""

    __slots__ = ("_buffer", "_position", "_sock")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buffer = b""
        self._position = 0

    def recv(self, size: int) -> bytes:
        start = self._position
        if start >= len(self._buffer):
            data: bytes = self._sock.recv(_CHUNK)  # raises BlockingIOError when nothing came
            if len(data) <= size:
                self._buffer, self._position = b"", 0
                return data  # also b"" when the peer closed
            self._buffer, start = data, 0
        end = min(start + size, len(self._buffer))
        self._position = end
        return self._buffer[start:end]

    def pending(self) -> int:
        """Bytes received but not yet read; paho does not wait in select() while any are."""
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._buffer) - self._position + inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class FastClient(paho.Client):
    """A paho client (MQTT 5) with a cheap path for received PUBLISH packets; see the module."""

    on_publish_received: PublishCallback | None = None
    topics_kept = _TOPICS_KEPT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._topics: dict[bytes, str] = {}  # the encoded topic → its one str

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        return sock if self._transport == "websockets" else _ReadAhead(sock)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        # paho reads one packet per select(); with `_ReadAhead` the rest are already here.
        for _ in range(_READ_BURST):
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                break
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_publish(self) -> MQTTErrorCode:
        handler = self.on_publish_received
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
        handler(topic, payload, mid, qos)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: Iterable[int]) -> None:
        """Queues one PUBACK (success, no properties) per packet id, in order, as one write.

        Only for QoS 1 messages received with `manual_ack=True`."""
        packet = b"".join([_PUBACK.pack(_PUBACK_HEAD, mid) for mid in mids])
        if packet:
            self._packet_queue(paho.PUBACK, packet, 0, 0)


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


def release_sockets(client: paho.Client) -> None:
    """Closes what paho's `loop_start()` opened, after `loop_stop()`: paho leaves its wake-up
    socket pair open until the client is garbage collected, which a reference cycle through
    its callbacks delays to some later collection (where the sockets warn as unclosed)."""
    reset = getattr(client, "_reset_sockets", None)
    if reset is not None:  # a paho without it (see PRIVATE_NAMES) closes them when collected
        reset()
