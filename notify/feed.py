"""The notifier's MQTT input: alert changes and notices, in a persistent session, each message
acknowledged (PUBACK) only when the service says it is taken.

paho with `manual_ack=True`, MQTT 3.1.1 with `clean_session=False` and a stable client id, so
what is published while the notifier is down waits for it at the broker, and a message taken
but not acknowledged when the notifier dies is delivered again (the dispatcher ignores a
change it has already taken). QoS 1 subscriptions to `{p}/+/alerts/+` and `{p}/+/notices/+`.

paho runs its network loop on its own thread; each message is handed to the event loop's
queue, which the broker bounds: it sends no more than its in-flight window of unacknowledged
QoS 1 messages (`max_inflight_messages`), and we acknowledge only after taking.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

import paho.mqtt.client as paho

from core.mqtt import MqttEndpoint, make_client
from devices.topics import alert_subscription, notice_subscription

log = logging.getLogger("moclo.notify")


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    mid: int
    qos: int
    connection: int  # which connection brought it: a PUBACK is only valid on that one


class AlertFeed:
    def __init__(self, endpoint: MqttEndpoint, *, client_id: str, prefix: str) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.subscriptions = (alert_subscription(prefix), notice_subscription(prefix))
        self.received = 0
        self._queue: asyncio.Queue[Received] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = threading.Event()
        self._connection = 0
        self._refused: str | None = None
        self._client = make_client(endpoint, client_id, manual_ack=True, persistent_session=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def start(self, timeout_s: float = 15.0) -> None:
        """Connects and subscribes; MqttUnreachable if the broker does not answer or refuses."""
        self._loop = asyncio.get_running_loop()
        try:
            self._client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise self.endpoint.unreachable(timeout_s, str(exc)) from None
        self._client.loop_start()
        ready = await asyncio.to_thread(self._connected.wait, timeout_s)
        if not ready:
            await self.close()
            raise self.endpoint.unreachable(timeout_s, self._refused or "no answer")

    async def get(self) -> Received:
        return await self._queue.get()

    async def get_batch(self, most: int) -> list[Received]:
        """The next message, and those already waiting behind it (at most `most` in all)."""
        batch = [await self._queue.get()]
        while len(batch) < most and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    def ack(self, message: Received) -> None:
        """PUBACK: the broker forgets it. Call in arrival order, after the message is taken.
        A message of an earlier connection is not acknowledged: the broker sends it again
        (taken again, a no-op), and its packet id may by now name another message."""
        if message.connection == self._connection:
            self._client.ack(message.mid, message.qos)

    async def close(self) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    # paho's thread ------------------------------------------------------------------------

    def _on_connect(
        self, client: paho.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            self._refused = f"the broker refused the login: {reason}"
            log.error("notifier: %s (check MOCLO_MQTT_USERNAME/PASSWORD)", self._refused)
            return
        # Every connect: a broker that lost the session (restarted without persistence)
        # forgets subscriptions too.
        client.subscribe([(topic, 1) for topic in self.subscriptions])
        self._connection += 1
        self._connected.set()

    def _on_disconnect(self, *args: object) -> None:
        if self._connected.is_set():
            log.warning("notifier: disconnected from %s; reconnecting", self.endpoint.display())
        self._connected.clear()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        message = Received(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._connection)
        self.received += 1
        if self._loop is not None and not self._loop.is_closed():
            # Not acknowledged, so a message that arrives while the service stops comes again.
            self._loop.call_soon_threadsafe(self._queue.put_nowait, message)
