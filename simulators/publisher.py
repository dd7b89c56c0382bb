"""Publishing simulated readings with paho-mqtt, with a bounded window of unacknowledged messages.

paho queues without limit by default and refuses more than ~65k outstanding QoS 1 messages, so
`publish` blocks while `window` messages await their PUBACK: memory stays flat however large
the fleet, and the publisher runs at the broker's pace.

Devices that share this connection and obey (`downlinks`, simulators/downlink.py) are served
as a gateway serves the devices behind it: the connection subscribes to each one's own
`commands` and `desired` topics (not a wildcard: a gateway is allowed its own devices, and
each message then reaches one connection only) and asks for each one's missed commands and
desired state once subscribed. Its client id is new on each run, so no session outlives the
run: the devices' `commands/get` and `desired/get` are what fetches what was sent meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from core.mqtt import MqttEndpoint, make_client
from simulators.downlink import DeviceDownlink, Outgoing
from simulators.window import AckWindow

SUBSCRIPTIONS_PER_PACKET = 100


class MqttPublisher:
    def __init__(
        self,
        endpoint: MqttEndpoint,
        *,
        client_id: str,
        qos: int = 1,
        window: int = 1_000,
        downlinks: list[DeviceDownlink] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.qos = qos
        # A device that obeys answers commands: its answers must not wait behind Nagle.
        self._client = make_client(endpoint, client_id, nodelay=bool(downlinks))
        self._client.max_inflight_messages_set(window)
        self._slots = AckWindow(window)
        self._connected = threading.Event()
        self._last_error = "no answer yet"
        self.published = 0
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        self._downlinks = {t: d for d in downlinks or () for t in d.subscriptions()}
        self.now: Callable[[], float] = time.time  # the simulation's clock, once it has one
        # Mids of downlink answers sent outside the window: only paho's network thread sends
        # those and reads this (a lock here would deadlock: paho calls on_publish holding the
        # lock its publish() takes).
        self._own: set[int] = set()
        self._subscribing: dict[int, list[DeviceDownlink]] = {}
        if self._downlinks:
            self._client.on_subscribe = self._on_subscribe
            self._client.on_message = self._on_message

    def start(self, *, timeout_s: float = 15.0) -> None:
        self._client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(timeout_s):
            self._client.loop_stop()
            raise self.endpoint.unreachable(timeout_s, self._last_error)

    def publish(
        self,
        topic: str,
        payload: bytes,
        abort: threading.Event | None = None,
        *,
        qos: int | None = None,
    ) -> bool:
        """Sends one message (at `qos`, default the publisher's); False if it was not sent
        (aborted, or dropped: QoS 0 while disconnected). QoS 1 messages are kept by paho over
        a reconnect and sent after it."""
        qos = self.qos if qos is None else qos
        if not self._slots.take(abort):
            return False
        info = self._client.publish(topic, payload, qos=qos)
        if info.rc == paho.MQTT_ERR_NO_CONN and qos == 0:
            self._slots.give()
            return False
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            self._slots.give()
            raise RuntimeError(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        self.published += 1
        return True

    def flush(self, *, timeout_s: float = 60.0, abort: threading.Event | None = None) -> bool:
        """Waits until every message was acknowledged (QoS 1) or written (QoS 0)."""
        return self._slots.drained(timeout_s, abort)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        if reason.is_failure:
            self._last_error = f"broker refused: {reason}"
            return
        self._connected.set()
        devices = list(dict.fromkeys(self._downlinks.values()))
        for k in range(0, len(devices), SUBSCRIPTIONS_PER_PACKET // 2):
            chunk = devices[k : k + SUBSCRIPTIONS_PER_PACKET // 2]
            _, mid = client.subscribe([(t, 1) for d in chunk for t in d.subscriptions()])
            if mid is not None:
                self._subscribing[mid] = chunk

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        for downlink in self._subscribing.pop(mid, []):
            self._send(downlink.on_subscribed())

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        downlink = self._downlinks.get(message.topic)
        if downlink is not None:
            self._send(downlink.on_message(message.topic, bytes(message.payload), self.now()))

    def _send(self, messages: list[Outgoing]) -> None:
        """Publishes downlink answers (QoS 1) outside the readings' window, from paho's network
        thread (which must not wait for the window: it is what frees it). Another thread sends
        them with `publish(..., qos=1)`, in the window."""
        for topic, payload in messages:
            self._own.add(self._client.publish(topic, payload, 1).mid)

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        if mid in self._own:
            self._own.discard(mid)
            return
        self._slots.give()
