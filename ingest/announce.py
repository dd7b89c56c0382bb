"""Where alert changes (and, on another connection, commands) leave ingest: MQTT, on a
connection of their own.

Ingest's consuming connection cannot carry them: while a backlog larger than its window waits,
paho's network thread for that connection is parked (see `source.py`), so the PUBACKs for
alert notifications would sit unread behind queued telemetry and every batch that changed an
alert would wait for them in vain. This connection is never parked. Each change is published
twice, QoS 1: on `{prefix}/{tenant}/alerts/{device_id}` (the stream of changes) and retained
on `{prefix}/{tenant}/alert-state/{device_id}/{rule}` (what is open now; an empty retained
message once resolved). `publish` returns once the broker has acknowledged both, so a change is
at the broker before the readings that caused it are acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core.mqtt import MqttEndpoint, make_client
from devices.topics import alert_state_topic, alert_topic
from ingest.paho_fast import publish_waking_once, release_sockets
from storage.alert_record import Alert

log = logging.getLogger("moclo.ingest.announce")


@dataclass(frozen=True, slots=True)
class Publication:
    """One message to publish, QoS 1."""

    topic: str
    payload: bytes
    retain: bool = False


class Publisher:
    """A connection of ingest's own that only publishes (QoS 1) and waits for the PUBACKs."""

    def __init__(
        self, endpoint: MqttEndpoint, *, client_id: str, prefix: str, mqtt311: bool = False
    ) -> None:
        self.endpoint = endpoint
        self.prefix = prefix
        # A clean session: what is unacknowledged lives in paho's queue and is resent after
        # a reconnect; nothing needs to wait at the broker for this client.
        # Commands and alert changes go out one at a time: none may wait for the one before
        # it to be ACKed by TCP (Nagle), 40 ms each (core.mqtt.no_delay).
        self._client = make_client(endpoint, client_id, nodelay=True, mqtt311=mqtt311)
        self._client.max_inflight_messages_set(1000)
        self._client.on_connect = self._on_connect
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Event | None = None
        self._last_error = "no answer yet"
        self._refused = False

    async def start(self, *, timeout_s: float = 15.0) -> None:
        """Connects; raises MqttUnreachable if that fails within `timeout_s`, or at once if
        the broker refuses the login."""
        self._loop = asyncio.get_running_loop()
        self._connected = asyncio.Event()
        self._client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=30)
        self._client.loop_start()
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        except TimeoutError:
            await self.close()
            raise self.endpoint.unreachable(timeout_s, self._last_error) from None
        if self._refused:
            await self.close()
            raise self.endpoint.unreachable(timeout_s, self._last_error)

    async def close(self) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        release_sockets(self._client)

    async def publish_all(
        self, publications: Sequence[Publication], *, timeout_s: float = 10.0
    ) -> bool:
        """Publishes each, in order; True once the broker has acknowledged them all."""
        infos = publish_waking_once(
            self._client, [(p.topic, p.payload, p.retain) for p in publications]
        )
        return await asyncio.to_thread(_all_published, infos, timeout_s)

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
            log.error("the broker refused the connection %s: %s", self.endpoint.display(), reason)
            self._refused = True
        assert self._loop is not None and self._connected is not None
        self._loop.call_soon_threadsafe(self._connected.set)


class AlertPublisher(Publisher):
    async def publish(self, alerts: Sequence[Alert], *, timeout_s: float = 10.0) -> bool:
        """Publishes each change and its retained state; True once the broker has them all."""
        publications = []
        for alert in alerts:
            payload = alert.to_json()
            publications.append(
                Publication(alert_topic(self.prefix, alert.tenant, alert.device_id), payload)
            )
            publications.append(
                Publication(
                    alert_state_topic(self.prefix, alert.tenant, alert.device_id, alert.rule),
                    b"" if alert.state == "resolved" else payload,
                    retain=True,
                )
            )
        return await self.publish_all(publications, timeout_s=timeout_s)


def _all_published(infos: list[paho.MQTTMessageInfo], timeout_s: float) -> bool:
    """Waits (on a worker thread) for the broker's PUBACK of each message."""
    deadline = time.monotonic() + timeout_s
    for info in infos:
        try:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        except (RuntimeError, ValueError):
            return False
        if not info.is_published():
            return False
    return True
