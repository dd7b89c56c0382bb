"""One MQTT connection per simulated device, as real devices have, without a thread per device.

Every device gets its own paho client (client id = the device id, so a broker ACL can tell
them apart), and all the clients are driven by one asyncio event loop on one thread through
paho's external-loop hooks: the loop reads and writes their sockets when they are ready, and
one timer runs paho's housekeeping (keepalive, retries) for all of them. The fleet's thread
hands each publish to that loop; a window of unacknowledged messages shared by all devices
keeps memory flat, as in `MqttPublisher`.

A device that obeys (`downlinks`) connects as real devices should for their downlink
(simulators/downlink.py): MQTT 3.1.1 with a persistent session, subscribed to its own
`commands` and `desired` only, so it works with the login and ACL of that one device. A device
scripted offline is disconnected (`park`) and reconnects when it is back (`unpark`): the broker
hands it what was queued meanwhile, and its `commands/get` fetches the rest.
"""

from __future__ import annotations

import asyncio
import resource
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from core.mqtt import MqttEndpoint, MqttUnreachable, make_client, no_delay
from simulators.downlink import DeviceDownlink, Outgoing
from simulators.window import AckWindow


def _raise_open_file_limit(needed: int) -> None:
    """Each connection is a file descriptor; 10,000 devices need more than the usual 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            raise MqttUnreachable(
                f"{needed} connections need {needed} open files; this "
                f"process may have {target} (raise `ulimit -n`)"
            )


class DeviceConnections:
    def __init__(
        self,
        endpoint: MqttEndpoint,
        client_ids: list[str],
        *,
        qos: int = 1,
        window: int = 1_000,
        credentials: dict[str, tuple[str, str]] | None = None,
        downlinks: dict[str, DeviceDownlink] | None = None,
        nodes: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.endpoint = endpoint
        # A cluster's MQTT listeners (host, port): device i connects to node i mod n, as a
        # fleet behind a load balancer would; none: every device at `endpoint`.
        self._nodes = list(nodes) or [(endpoint.host, endpoint.port)]
        self.qos = qos
        self._client_ids = client_ids
        self._slots = AckWindow(window)
        self._connected = 0
        self._all_connected = threading.Event()
        self._failure: str | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="mqtt-devices", daemon=True
        )
        self.clients: dict[str, paho.Client] = {}
        self._credentials = credentials or {}  # client id → (username, password)
        self._closing = False
        self.dropped = 0
        self._housekeeper: asyncio.Task[None] | None = None
        self._downlinks = downlinks or {}  # client id → the device's downlink
        self.now: Callable[[], float] = time.time  # the simulation's clock, once it has one
        self._own: set[tuple[str, int]] = set()  # (client id, mid) sent outside the window
        self._subscribing: dict[tuple[str, int], DeviceDownlink] = {}
        self._parked: set[str] = set()  # devices scripted offline: disconnected on purpose

    # -- the fleet's side ------------------------------------------------------------------

    def start(self, *, timeout_s: float = 60.0) -> None:
        _raise_open_file_limit(len(self._client_ids) + 256)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._connect_all(), self._loop).result(timeout_s)
        # Settled: every device connected, or the broker refused one (no point waiting on).
        if not self._all_connected.wait(timeout_s) or self._failure is not None:
            self.close()
            raise self.endpoint.unreachable(
                timeout_s,
                self._failure or f"{self._connected} of {len(self._client_ids)} devices connected",
            )

    def publish(
        self, client_id: str, topic: str, payload: bytes, abort: threading.Event | None = None
    ) -> bool:
        """Hands one message to the device's connection; False if aborted while the shared
        window was full. (A QoS 0 message its device cannot send now is dropped and counted.)"""
        if not self._slots.take(abort):
            return False
        self._loop.call_soon_threadsafe(self._publish, self.clients[client_id], topic, payload)
        return True

    def flush(self, *, timeout_s: float = 60.0, abort: threading.Event | None = None) -> bool:
        """Waits until every message was acknowledged (QoS 1) or written (QoS 0)."""
        return self._slots.drained(timeout_s, abort)

    def park(self, client_id: str) -> None:
        """Disconnects a device scripted offline; it stays away until `unpark`."""
        self._parked.add(client_id)
        self._loop.call_soon_threadsafe(self.clients[client_id].disconnect)

    def unpark(self, client_id: str) -> None:
        """Reconnects a device back from offline (its session resumes where it was)."""
        self._parked.discard(client_id)
        self._loop.call_soon_threadsafe(self._reconnect, self.clients[client_id], client_id, 0)

    def close(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._disconnect_all(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        self._loop.close()

    # -- the event loop's side -------------------------------------------------------------

    async def _connect_all(self) -> None:
        loop = asyncio.get_running_loop()
        for index, client_id in enumerate(self._client_ids):
            obeys = client_id in self._downlinks
            endpoint = self.endpoint
            if client_id in self._credentials:
                # The device's own login, so that a broker naming clients by their login (the
                # engine, over 3.1.1) keeps the device's client id.
                username, password = self._credentials[client_id]
                endpoint = replace(endpoint, username=username, password=password)
            client = make_client(endpoint, client_id, persistent_session=obeys)
            client.user_data_set(client_id)
            if obeys:
                client.on_subscribe = self._on_subscribe
                client.on_message = self._on_message
            client.on_socket_open = self._watch_socket
            client.on_socket_close = self._unwatch_socket
            client.on_socket_register_write = self._want_write
            client.on_socket_unregister_write = self._wrote
            client.on_connect = self._on_connect
            client.on_publish = self._on_publish
            client.on_disconnect = self._on_disconnect
            client.max_inflight_messages_set(self._slots.size)
            self.clients[client_id] = client
            try:
                client.connect(*self._nodes[index % len(self._nodes)], keepalive=60)
            except OSError as exc:
                self._failure = f"{client_id}: {exc}"
                self._all_connected.set()  # settled: no point waiting for the rest
                return
            await asyncio.sleep(0)  # let CONNACKs in while the others connect
        self._housekeeper = loop.create_task(self._housekeeping(), name="mqtt-housekeeping")

    async def _housekeeping(self) -> None:
        while True:
            for client in self.clients.values():
                client.loop_misc()
            await asyncio.sleep(1.0)  # paho's keepalive and retry timer, for every client

    async def _disconnect_all(self) -> None:
        self._closing = True
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        for client in self.clients.values():
            client.disconnect()
        await asyncio.sleep(0)

    def _publish(self, client: paho.Client, topic: str, payload: bytes) -> None:
        info = client.publish(topic, payload, self.qos)
        if info.rc == paho.MQTT_ERR_NO_CONN and self.qos == 0:
            self.dropped += 1  # paho keeps QoS 1 for after the reconnect, not QoS 0
            self._slots.give()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        if not self._closing and userdata not in self._parked:
            self._reconnect_later(client, userdata, attempt=0)

    def _reconnect_later(self, client: paho.Client, client_id: str, attempt: int) -> None:
        # paho's external loop does not reconnect by itself: back off, capped, and try again.
        delay = min(30.0, 0.5 * 2**attempt)
        self._loop.call_later(delay, self._reconnect, client, client_id, attempt)

    def _reconnect(self, client: paho.Client, client_id: str, attempt: int) -> None:
        if self._closing or client_id in self._parked:
            return
        try:
            client.reconnect()
        except OSError:
            self._reconnect_later(client, client_id, attempt + 1)

    # paho's external-loop hooks: the event loop watches each client's socket for it.
    def _watch_socket(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if userdata in self._downlinks:
            no_delay(sock)
        self._loop.add_reader(sock, client.loop_read)

    def _unwatch_socket(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._loop.remove_reader(sock)

    def _want_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._loop.add_writer(sock, client.loop_write)

    def _wrote(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._loop.remove_writer(sock)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        if reason.is_failure:
            self._failure = f"the broker refused device {userdata}: {reason}"
            self._all_connected.set()
            return
        self._connected += 1
        if self._connected == len(self._client_ids):
            self._all_connected.set()
        if (downlink := self._downlinks.get(userdata)) is not None:
            # Every connect, even with a session kept: a broker may have lost it.
            _, mid = client.subscribe([(topic, 1) for topic in downlink.subscriptions()])
            if mid is not None:
                self._subscribing[(userdata, mid)] = downlink

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        downlink = self._subscribing.pop((userdata, mid), None)
        if downlink is not None:  # subscribed: now ask for what was missed
            self._send(client, userdata, downlink.on_subscribed())

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        downlink = self._downlinks[userdata]
        self._send(
            client, userdata, downlink.on_message(message.topic, bytes(message.payload), self.now())
        )

    def _send(self, client: paho.Client, client_id: str, messages: list[Outgoing]) -> None:
        """Publishes a device's downlink answers (QoS 1) outside the readings' window."""
        for topic, payload in messages:
            info = client.publish(topic, payload, 1)
            self._own.add((client_id, info.mid))

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        if self._own:
            key = (userdata, mid)
            if key in self._own:
                self._own.discard(key)
                return
        self._slots.give()
