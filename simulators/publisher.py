"""Publishing simulated readings with paho-mqtt, with a bounded window of unacknowledged messages.

paho queues without limit by default and refuses more than ~65k outstanding QoS 1 messages, so
`publish` blocks while `window` messages await their PUBACK: memory stays flat however large
the fleet, and the publisher runs at the broker's pace.
"""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from core.mqtt import MqttEndpoint, make_client
from simulators.window import AckWindow


class MqttPublisher:
    def __init__(
        self, endpoint: MqttEndpoint, *, client_id: str, qos: int = 1, window: int = 1_000
    ) -> None:
        self.endpoint = endpoint
        self.qos = qos
        self._client = make_client(endpoint, client_id)
        self._client.max_inflight_messages_set(window)
        self._slots = AckWindow(window)
        self._connected = threading.Event()
        self._last_error = "no answer yet"
        self.published = 0
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish

    def start(self, *, timeout_s: float = 15.0) -> None:
        self._client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(timeout_s):
            self._client.loop_stop()
            raise self.endpoint.unreachable(timeout_s, self._last_error)

    def publish(self, topic: str, payload: bytes, abort: threading.Event | None = None) -> bool:
        """Sends one message; False if it was not sent (aborted, or dropped: QoS 0 while
        disconnected). QoS 1 messages are kept by paho over a reconnect and sent after it."""
        if not self._slots.take(abort):
            return False
        info = self._client.publish(topic, payload, qos=self.qos)
        if info.rc == paho.MQTT_ERR_NO_CONN and self.qos == 0:
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

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        self._slots.give()
