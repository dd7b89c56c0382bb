"""The live side of `moclo serve`: one MQTT subscription for the whole process, fanned out to
every open event stream.

Alert changes come from `{prefix}/+/alerts/+`, as ingest publishes them (before it stores
them, so a change reaches the dashboard as soon as it exists); what became of each command from
`{prefix}/+/command-status/+` (serve/command_watch.py). Readings come from the
telemetry topics and are validated with the same decoder as ingest, so nothing shown live
would be rejected by ingest. Readings are sent as a batch every `flush_every_s`, holding the
newest reading of each device: a dashboard wants to know what each device says now, not every
one of a thousand readings a second.

The hub trusts what it shows no more than ingest trusts what it stores. With a registry check
(MOCLO_UNREGISTERED `reject`, the default), nothing of a device that is not registered, or was
revoked, reaches a stream: its readings are dropped by the same decoder and registry lookup as
ingest's (`access.known.RegisteredDevices`, read again within 2 s of a change), and so are alert
changes about it. With `flag`, ingest stores such readings and notes the device; here they are
shown, marked `"registered": false`. With `off`, nothing is checked. An alert change is routed by
the tenant and device of the topic it came on, which the broker's ACL vouches for; one whose
payload names another tenant or device is dropped rather than shown anywhere.

A token may hold at most MAX_STREAMS streams at once (a dashboard's sessions count against the
token they were made from); the next one is refused (HTTP 429) until one closes. Each tick's
newest readings are serialised once, grouped by tenant, and each distinct filter's batch is
joined from those bytes once and shared by every stream with that filter: the cost of a tick
grows with the devices and the distinct filters, not with streams × devices
(`readings_serialised` counts the work).

Each stream's own flow control (its bounded queue, `overflow`, heartbeats) is in
`live_stream.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterator

import aiomqtt
import orjson

from access.known import RegisteredDevices
from core.settings import Settings
from devices.rfc3339 import format_us
from devices.topics import DeviceAddress, alert_subscription, telemetry_subscription
from ingest.decode import Decoded, Decoder, Limits
from query.alerts import alert_json
from serve.command_watch import CommandWatch, update_json
from serve.errors import TooManyStreams
from serve.live_stream import Event, Stream, StreamFilter
from storage.alert_record import parse_alert

log = logging.getLogger("moclo.serve")

RECONNECT_MAX_S = 10.0
MAX_STREAMS = 8  # per token: a few tabs and screens, not an unbounded number of queues
_LOGGED_DROPS = 10  # dropped alert changes named in the log per run; the rest only counted


class LiveHub:
    """Receives alert changes and readings from the broker and offers them to each stream."""

    def __init__(
        self, settings: Settings, *, flush_every_s: float = 0.25, max_streams: int = MAX_STREAMS
    ) -> None:
        self._settings = settings
        self._max_streams = max_streams
        self._owned: dict[str, int] = {}  # token id → its open streams
        self._registered: RegisteredDevices | None = None
        if settings.unregistered != "off":
            self._registered = RegisteredDevices(settings.registry)
        self._flag_unregistered = settings.unregistered == "flag"
        # The same bounds as ingest's, so the dashboard shows no reading ingest would refuse.
        self._decoder = Decoder(
            settings.topic_prefix,
            limits=Limits(max_past_s=settings.max_reading_age),
            registered=self._registered,
            unregistered="flag" if self._flag_unregistered else "reject",
        )
        self._alert_head = settings.topic_prefix + "/"
        # What became of commands: shown live, and handed to whoever waits for one.
        self.commands = CommandWatch(settings.topic_prefix)
        self._flush_every_s = flush_every_s
        self._streams: set[Stream] = set()
        self._newest: dict[tuple[str, str], dict[str, object]] = {}  # (tenant, device) → reading
        self.connected = asyncio.Event()
        self.alerts_seen = 0
        self.alerts_dropped = 0  # forged (payload and topic disagree) or of unregistered devices
        self.readings_seen = 0
        self.readings_serialised = 0  # the fan-out's work: once per reading per tick

    @contextlib.contextmanager
    def open_stream(self, wants: StreamFilter, *, owner: str | None = None) -> Iterator[Stream]:
        stream = self.reserve(wants, owner=owner)
        try:
            yield stream
        finally:
            self.release(stream)

    def reserve(self, wants: StreamFilter, *, owner: str | None) -> Stream:
        """A new stream, counted against `owner` (a token id); TooManyStreams if it holds
        MAX_STREAMS already. Call on the event loop; `release` it when done."""
        if owner is not None:
            held = self._owned.get(owner, 0)
            if held >= self._max_streams:
                raise TooManyStreams(
                    f"this token has {held} live streams open already, the most one token may "
                    "have: close one (another tab, screen or client signed in with it) and try "
                    "again"
                )
            self._owned[owner] = held + 1
        stream = Stream(wants, owner=owner)
        self._streams.add(stream)
        return stream

    def release(self, stream: Stream) -> None:
        """Ends a reserved stream's place; a second call does nothing."""
        if stream not in self._streams:
            return
        self._streams.discard(stream)
        if stream.owner is not None:
            left = self._owned.pop(stream.owner) - 1
            if left:
                self._owned[stream.owner] = left

    async def run(self, stop: asyncio.Event) -> None:
        """Subscribes until `stop`, reconnecting with backoff when the broker goes away."""
        if self._registered is not None:
            await self._refresh_registry()
        flusher = asyncio.create_task(self._flush_readings(stop), name="serve-live-flush")
        try:
            delay = 0.5
            while not stop.is_set():
                was_connected = False
                try:
                    async with self._client() as client:
                        delay = 0.5
                        was_connected = True
                        await self._consume(client, stop)
                except aiomqtt.MqttError as exc:
                    self.connected.clear()
                    # moclo's brokers allow one connection per login: another serve with the
                    # same login takes this connection's place (and this one, reconnecting,
                    # takes it back), which over MQTT 3.1.1 looks like any lost connection.
                    username = self._settings.mqtt.username
                    log.warning(
                        "live stream: broker at %s unavailable (%s)%s; retrying in %.1fs",
                        self._settings.mqtt.display(),
                        exc,
                        f", or another client logged in as {username!r} took this connection's "
                        "place (the broker allows one connection per login: give each serve "
                        "its own account)"
                        if was_connected and username
                        else "",
                        delay,
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    delay = min(RECONNECT_MAX_S, delay * 2)
        finally:
            self.connected.clear()
            for stream in self._streams:
                stream.close()
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            if self._registered is not None:
                self._registered.close()

    def _client(self) -> aiomqtt.Client:
        endpoint = self._settings.mqtt
        return aiomqtt.Client(
            endpoint.host,
            endpoint.port,
            username=endpoint.username,
            password=endpoint.password,
            tls_context=endpoint.ssl_context(),
            # aiomqtt speaks MQTT 3.1.1 (its default) to every broker; the engine's auth service
            # also wants the login as client id (MOCLO_MQTT_PROTOCOL=3.1.1 says so).
            identifier=endpoint.client_id(f"moclo-serve-{uuid.uuid4().hex[:8]}"),
            timeout=5.0,
        )

    async def _consume(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        prefix = self._settings.topic_prefix
        alerts = alert_subscription(prefix)
        await client.subscribe(alerts, qos=1)
        # QoS 0: a dashboard that misses a reading shows the next one.
        await client.subscribe(telemetry_subscription(prefix), qos=0)
        await client.subscribe(self.commands.subscription, qos=1)
        self.connected.set()
        log.info("live stream: subscribed on %s", self._settings.mqtt.display())
        messages = aiter(client.messages)
        while not stop.is_set():
            next_message = asyncio.ensure_future(anext(messages))
            stopping = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait(
                {next_message, stopping}, return_when=asyncio.FIRST_COMPLETED
            )
            stopping.cancel()
            if next_message not in done:
                next_message.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await next_message
                return
            message = next_message.result()
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                continue
            if message.topic.matches(alerts):
                self._on_alert(str(message.topic), bytes(payload))
            elif message.topic.matches(self.commands.subscription):
                self._on_command_status(str(message.topic), bytes(payload))
            else:
                self._on_telemetry(str(message.topic), bytes(payload))

    def _on_alert(self, topic: str, payload: bytes) -> None:
        alert = parse_alert(payload)
        if alert is None:
            return
        # `{prefix}/{tenant}/alerts/{device_id}`: the subscription guarantees the shape.
        tenant, _, device_id = topic[len(self._alert_head) :].split("/")
        if (alert.tenant, alert.device_id) != (tenant, device_id):
            self._drop_alert(topic, "its payload names another tenant or device than its topic")
            return
        address = DeviceAddress(tenant, alert.device_type, device_id)
        if self._rejects(address):
            self._drop_alert(topic, "its device is not registered (or was revoked)")
            return
        self.alerts_seen += 1
        event = Event("alert", orjson.dumps(alert_json(alert)))
        for stream in self._streams:
            if stream.wants.admits(alert.tenant, alert.device_id):
                stream.offer(event)

    def _on_command_status(self, topic: str, payload: bytes) -> None:
        taken = self.commands.take(topic, payload)
        if taken is None:
            return
        tenant, update = taken
        event = Event("command", orjson.dumps(update_json(tenant, update)))
        for stream in self._streams:
            if stream.wants.admits(tenant, update.device):
                stream.offer(event)

    def _rejects(self, address: DeviceAddress) -> bool:
        """Whether the registry check keeps `address` off every stream."""
        registered = self._registered
        return registered is not None and not self._flag_unregistered and address not in registered

    def _drop_alert(self, topic: str, why: str) -> None:
        self.alerts_dropped += 1
        if self.alerts_dropped <= _LOGGED_DROPS:
            log.warning(
                "live stream: an alert change on %s is not shown: %s%s",
                topic,
                why,
                " (further ones are counted, not logged)"
                if self.alerts_dropped == _LOGGED_DROPS
                else "",
            )

    def _on_telemetry(self, topic: str, payload: bytes) -> None:
        out = Decoded()
        self._decoder.decode(topic, payload, time.time_ns(), out)
        registered = self._registered
        for valid in out.readings:
            address, reading = valid.address, valid.reading
            self.readings_seen += 1
            key = (address.tenant, address.device_id)
            current = self._newest.get(key)
            if current is not None and int(str(current["_ts_ns"])) > reading.ts:
                continue  # a late reading is not what the device says now
            body: dict[str, object] = {
                "tenant": address.tenant,
                "device_type": address.device_type,
                "device_id": address.device_id,
                "ts": format_us(reading.ts),
                "_ts_ns": reading.ts,
            }
            # seq and the measurements, in the model's order (a Struct has no model_dump)
            body["seq"] = reading.seq
            body.update({name: getattr(reading, name) for name in reading.measurement_fields})
            if registered is not None and address not in registered:
                body["registered"] = False  # only reached with flag: the decoder rejects it else
            self._newest[key] = body
        if self._flag_unregistered:
            self._decoder.take_flagged()  # ingest records them; here the mark on each is enough

    async def _refresh_registry(self) -> None:
        """Reads the registry again when due (on a worker thread: it is SQLite), as ingest does;
        after a revocation, the revoked device's reading waiting for the next batch is dropped."""
        registered = self._registered
        if registered is None or not registered.due():
            return
        try:
            changed = await asyncio.to_thread(registered.refresh)
        except OSError as exc:
            # RegisteredDevices keeps the last known set; the live stream must not stop on it.
            log.warning("live stream: cannot read the registry %s (%s)", registered.path, exc)
            return
        if not changed:
            return
        self._decoder.forget_flagged()
        if not self._flag_unregistered:
            self._newest = {
                key: body
                for key, body in self._newest.items()
                if DeviceAddress(key[0], str(body["device_type"]), key[1]) in registered
            }

    async def _flush_readings(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._flush_every_s)
            await self._refresh_registry()
            self.flush_once()

    def flush_once(self) -> None:
        """Offers the newest readings since the last tick to every stream that wants them."""
        if not self._newest:
            return
        newest, self._newest = self._newest, {}
        # Each reading serialised once, grouped by tenant; a batch is then a join of bytes.
        by_tenant: dict[str, list[tuple[str, bytes]]] = {}
        for (tenant, device_id), body in newest.items():
            del body["_ts_ns"]
            by_tenant.setdefault(tenant, []).append((device_id, orjson.dumps(body)))
        self.readings_serialised += len(newest)
        joined = {tenant: b",".join(d for _, d in items) for tenant, items in by_tenant.items()}
        batches: dict[StreamFilter, Event | None] = {}
        for stream in self._streams:
            wants = stream.wants
            if not wants.readings:
                continue
            if wants not in batches:
                batches[wants] = _batch(wants, by_tenant, joined)
            event = batches[wants]
            if event is not None:
                stream.offer(event)


def _batch(
    wants: StreamFilter,
    by_tenant: dict[str, list[tuple[str, bytes]]],
    joined: dict[str, bytes],
) -> Event | None:
    """The `readings` event for one filter, from readings serialised already; None if empty."""
    tenants = joined.keys() if wants.tenants is None else wants.tenants & joined.keys()
    if wants.device_id is None:
        parts = [joined[tenant] for tenant in sorted(tenants)]
    else:
        parts = [
            data
            for tenant in sorted(tenants)
            for device_id, data in by_tenant[tenant]
            if device_id == wants.device_id
        ]
    if not parts:
        return None
    return Event("readings", b"[" + b",".join(parts) + b"]")
