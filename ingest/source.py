"""Where readings enter: an MQTT subscription, delivered to asyncio in batches, acknowledged late.

paho-mqtt 2 runs the connection in its own thread (with its reconnect logic) because it offers
manual acknowledgement (`manual_ack=True`) and aiomqtt does not (aiomqtt issue 345). Its
receive and acknowledge paths are replaced by cheaper ones (`ingest/paho_fast.py`; paho's stock
client when `stock_client` is asked for, or when paho lacks a private name those rely on). Messages
are handed to the event loop in batches, one wake-up per burst rather than per message, and a
batch's acknowledgements leave as one write.

Guarantees:
- a message is acknowledged only when the service calls `ack()` for it, after its readings are
  stored; whatever is not acknowledged is delivered again by the broker (persistent session);
- the messages waiting here are bounded by `window`: ingest sends it as its MQTT 5 Receive
  Maximum, and because Mosquitto 2.0.11 overshoots that after the first acknowledgements
  (eclipse-mosquitto issue 2301), paho's network thread also stops reading from the socket
  while `window` messages wait, so TCP holds the broker back; a slow database stops intake
  instead of growing memory;
- they are bounded by `window_bytes` of payload too (paho's thread stops reading the same
  way), since a count alone lets arrays of readings hold fifty times more than single ones;
- after a reconnect, messages from the old connection are never acknowledged on the new one
  (their packet ids may be reused); the broker redelivers them instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence

import msgspec
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core.mqtt import MqttEndpoint, make_client
from ingest.paho_fast import FastClient, Publish, client_class, release_sockets

log = logging.getLogger("moclo.ingest.source")


class Message(msgspec.Struct, gc=False):
    """One received message. Made once per message, so a msgspec Struct: built in C (about
    two thirds of a slots dataclass's cost, measured here) and not tracked by the garbage
    collector (it holds only strings, bytes and integers, so it can be in no cycle), which a
    window of 10,000 of them would otherwise make scan again and again."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    received_ns: int
    connection: int  # which connection delivered it; acks go only to that connection
    partition: int = -1  # the engine's partition it came from (ingest/engine_source.py)
    # A forwarded acknowledgement on the engine: the telemetry topic of the alert's device, by
    # which it was routed (its partition places that device before judging it).
    device_topic: str = ""


class MqttSource:
    def __init__(
        self,
        endpoint: MqttEndpoint,
        *,
        client_id: str,
        subscription: str | Sequence[str],
        batch_messages: int = 2_000,
        batch_bytes: int = 1024 * 1024,
        window: int = 10_000,
        window_bytes: int = 8 * 1024 * 1024,
        session_expiry_s: int = 86_400,
        keepalive_s: int = 30,
        stock_client: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.subscriptions = (
            (subscription,) if isinstance(subscription, str) else tuple(subscription)
        )
        self.subscription = " and ".join(self.subscriptions)  # for messages
        if window < batch_messages:
            raise ValueError("window must be at least batch_messages, or batches never fill")
        if window_bytes < batch_bytes:
            raise ValueError("window_bytes must be at least batch_bytes, or batches never fill")
        self._batch_messages = batch_messages
        self._batch_bytes = batch_bytes
        self._window = window
        self._window_bytes = window_bytes
        self._session_expiry_s = session_expiry_s
        self._keepalive_s = keepalive_s
        chosen = paho.Client if stock_client else client_class()
        client = make_client(endpoint, client_id, manual_ack=True, client_class=chosen)
        self._client = client
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message  # what the fast path leaves to paho, or all
        if isinstance(client, FastClient):
            client.on_publishes_received = self._on_publishes

        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # paho's thread waits here when full
        self._closing = False
        self._pending: list[Message] = []
        self._pending_bytes = 0
        self._wake_scheduled = False
        self.caught_up = True  # the last batch took everything that had arrived
        self._connection = 0
        self._last_error = "no answer yet"
        self.connected = False
        self.messages_received = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived: asyncio.Event | None = None
        self._full: asyncio.Event | None = None
        self._subscribed: asyncio.Event | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, *, timeout_s: float = 15.0) -> None:
        """Connects and subscribes; raises MqttUnreachable if that fails within `timeout_s`."""
        self._loop = asyncio.get_running_loop()
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._subscribed = asyncio.Event()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._session_expiry_s
        properties.ReceiveMaximum = self._window
        self._client.connect_async(
            self.endpoint.host,
            self.endpoint.port,
            keepalive=self._keepalive_s,
            clean_start=False,
            properties=properties,
        )
        self._client.loop_start()
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout_s)
        except TimeoutError:
            await self.close()
            raise self.endpoint.unreachable(timeout_s, self._last_error) from None

    async def close(self) -> None:
        with self._lock:
            self._closing = True
            self._room.notify_all()
        self._client.disconnect()
        # loop_stop joins paho's thread; keep the event loop free while it does.
        await asyncio.to_thread(self._client.loop_stop)
        release_sockets(self._client)

    # -- what the service calls ------------------------------------------------------------

    async def next_batch(self, *, linger_s: float) -> list[Message]:
        """Waits for a message, then up to `linger_s` for a full batch; returns what is there.

        A batch is full at `batch_messages` messages or `batch_bytes` of payload (arrays of
        readings fill it by bytes), whichever comes first. Under load batches fill at once;
        when quiet, `linger_s` bounds the added latency. `caught_up` then says whether the
        batch took everything that had arrived.
        """
        assert self._arrived is not None and self._full is not None, "start() first"
        await self._arrived.wait()
        if not self._is_full():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), linger_s)
        with self._lock:
            batch = self._take(self._batch_messages)
            if not self._is_full():
                self._full.clear()
            self.caught_up = not self._pending
            if not self._pending:
                self._arrived.clear()
                self._wake_scheduled = False
        return batch

    def take_pending(self, at_most: int) -> list[Message]:
        """Up to a batch (and `at_most`) of what has arrived, without waiting (for the drain
        at shutdown)."""
        with self._lock:
            return self._take(min(at_most, self._batch_messages))

    def _take(self, at_most: int) -> list[Message]:
        """Takes up to `at_most` messages and `batch_bytes` of payload (at least one message),
        under the lock."""
        batch, size = split_batch(self._pending, at_most, self._batch_bytes)
        self._pending_bytes -= size
        self._room.notify_all()
        return batch

    def _is_full(self) -> bool:
        return (
            len(self._pending) >= self._batch_messages or self._pending_bytes >= self._batch_bytes
        )

    def _window_is_full(self) -> bool:
        return len(self._pending) >= self._window or self._pending_bytes >= self._window_bytes

    @property
    def pending_count(self) -> int:
        """Messages received and not yet taken: how far the consumer is behind the broker."""
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        """The payload those messages hold."""
        return self._pending_bytes

    def ack(self, messages: list[Message]) -> int:
        """Acknowledges stored messages, in arrival order; returns how many were sent."""
        current = self._connection
        mids = [m.mid for m in messages if m.qos == 1 and m.connection == current]
        if isinstance(self._client, FastClient):
            self._client.ack_many(mids)  # one write for the batch
        else:
            for mid in mids:
                self._client.ack(mid, 1)
        sent = len(mids)
        for message in messages:
            if message.qos == 2 and message.connection == current:  # not subscribed so, today
                self._client.ack(message.mid, message.qos)
                sent += 1
        return sent

    # -- paho's thread ---------------------------------------------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._last_error = f"broker refused: {reason}"
            log.error("MQTT broker %s refused the connection: %s", self.endpoint.display(), reason)
            return
        with self._lock:
            self._connection += 1
            if flags.session_present:
                # The broker resends what it delivered on the old connection and was not
                # acknowledged; keeping our copies too would hold two of each.
                current = self._connection
                self._pending = [m for m in self._pending if m.connection == current]
                self._pending_bytes = sum(len(m.payload) for m in self._pending)
        self.connected = True
        log.info(
            "connected to %s (session present: %s)", self.endpoint.display(), flags.session_present
        )
        client.subscribe([(topic, 1) for topic in self.subscriptions])
        if flags.session_present:
            # The session kept the subscription. Its backlog may arrive before the SUBACK and
            # fill the window, so waiting for the SUBACK here could wait for ever.
            self._mark_subscribed()

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            # From now on, acknowledgements for this connection's messages are not sent: the
            # next connection may reuse their packet ids.
            self._connection += 1
        was_connected, self.connected = self.connected, False
        self._last_error = f"disconnected: {reason}"
        if reason.is_failure:
            # moclo's brokers allow one connection per login (Mosquitto 2.0.11 just closes the
            # older one, "Unspecified error" here): a second ingest with this login takes the
            # session, and each reconnect takes it back, splitting the readings between them.
            username = self.endpoint.username
            log.warning(
                "MQTT connection lost (%s)%s; paho reconnects with backoff",
                reason,
                f", or another client logged in as {username!r} took this connection's place "
                "(the broker allows one connection per login: give each ingest its own account)"
                if was_connected and username
                else "",
            )

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if any(code.is_failure for code in reason_codes):
            self._last_error = f"subscription to {self.subscription} refused: {reason_codes}"
            log.error("%s", self._last_error)
            return
        self._mark_subscribed()

    def _mark_subscribed(self) -> None:
        assert self._loop is not None and self._subscribed is not None
        self._loop.call_soon_threadsafe(self._subscribed.set)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError as exc:
            # A topic that is not UTF-8 (Mosquitto refuses them; a broken or hostile broker
            # may not). Raising here would end paho's network thread, and ingest with it; the
            # escaped topic matches no device's, so the decoder rejects it with its reason.
            topic = bytes(exc.object).decode("utf-8", "backslashreplace")
        self._on_publishes([(topic, bytes(msg.payload), msg.mid, msg.qos)])

    def _on_publishes(self, received: list[Publish]) -> None:
        """Holds the messages of one read, in order, under one lock: they share an arrival time
        (they came in one recv()). Waits for room whenever the window fills, so the window
        holds exactly as it did message by message."""
        received_ns = time.time_ns()
        pending = self._pending
        with self._lock:
            connection = self._connection
            was_full = self._is_full()
            for topic, payload, mid, qos in received:
                pending.append(Message(topic, payload, mid, qos, received_ns, connection))
                self._pending_bytes += len(payload)
                self.messages_received += 1
                if self._window_is_full():
                    # Stop reading until the consumer takes a batch (see the module docstring).
                    self._wake_consumer(was_full)
                    self._room.wait_for(lambda: not self._window_is_full() or self._closing)
                    was_full = self._is_full()
            self._wake_consumer(was_full)

    def _wake_consumer(self, was_full: bool) -> None:
        """Under the lock: tells the consumer that messages arrived (once until it takes them),
        and that a batch is full when it became so since `was_full` was taken."""
        assert self._loop is not None and self._arrived is not None and self._full is not None
        if not self._wake_scheduled:
            self._wake_scheduled = True
            self._loop.call_soon_threadsafe(self._arrived.set)
        if not was_full and self._is_full():
            self._loop.call_soon_threadsafe(self._full.set)


def split_batch(
    pending: list[Message], at_most: int, batch_bytes: int
) -> tuple[list[Message], int]:
    """Removes from the head of `pending` up to `at_most` messages and `batch_bytes` of payload
    (at least one message), and returns them with their payload's size: the batching of every
    source (this one and `engine_source.py`), under its lock."""
    count, size = 0, 0
    limit = min(at_most, len(pending))
    while count < limit and (size < batch_bytes or not count):
        size += len(pending[count].payload)
        count += 1
    batch = pending[:count]
    del pending[:count]
    return batch, size
