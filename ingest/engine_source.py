"""The distributed engine (RabbitMQ) as ingest's source: partitions of the telemetry over AMQP.

Design in docs/decisions/0001-distributed-engine.md ("Partitions, workers and balance"):

- an `x-consistent-hash` exchange `moclo.partition.{set}` bound from the MQTT exchange with
  the telemetry topics only spreads devices over P quorum queues `moclo.partition.{set}.{n}`,
  each device always on the same one (its topic is the hashed routing key);
- every queue is `x-single-active-consumer`: RabbitMQ delivers a partition to exactly one
  worker at a time, in order, and hands it to a standby when that worker's connection dies
  (its unacknowledged deliveries first);
- balance is ours: worker I of W consumes partitions I, I+W, … first and the rest as a
  standby; a worker that finds itself in front on another's partition (it started first, or
  took it over) steps back once that worker is alive: it cancels its consumer there and
  consumes again, behind. A worker is alive while its exclusive queue
  `moclo.partition.{set}.worker.{I}` exists (RabbitMQ deletes it with its connection).

Every worker also consumes the control queue, after its partitions (ingest/control.py); its
deliveries come as messages of the partition `CONTROL`. `forward` sends an acknowledgement on
to its alert's partition, its MQTT topic in the header `moclo-topic` (partition_plan.py says
when that header is believed).

Like `MqttSource`, a delivery is acknowledged only after its batch is stored (`ack`), and
acknowledgements for a connection that is gone are never sent (its deliveries come again).
pika's BlockingConnection runs on a thread of its own; acknowledgements reach it through
`add_callback_threadsafe`, the one thread-safe call pika has.

Why one module of about 430 lines: the session, the deliveries, the balance and the liveness
checks share one connection's state on pika's thread (which connection is current, what waits,
what was stepped back from); forwarding (engine_forward.py) and the plan's names and probes
(partition_plan.py) are what could leave it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import secrets
import threading
import time
from collections.abc import Sequence
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from ingest.engine_forward import Forwarding
from ingest.partition_plan import (
    FORWARDED_TOPIC,
    PROBE_TOPIC,
    RESOURCE_LOCKED,
    PartitionPlan,
    amqp_topic,
    declare_partitions,
    forwarded_topic,
    is_alive,
    probe_alive,
    probe_control,
    short_lived,
)
from ingest.source import Message, split_batch

log = logging.getLogger("moclo.ingest.engine")
logging.getLogger("pika").setLevel(logging.WARNING)  # its INFO lines narrate every normal close
# The liveness probe's answer, 405 RESOURCE_LOCKED ("that worker is alive"), arrives as a
# channel close that pika logs as a WARNING, twice a second with two workers in `moclo up
# --engine`. pika raises every channel close as ChannelClosedByBroker too, which this
# module handles (and logs where it matters).
logging.getLogger("pika.channel").setLevel(logging.ERROR)

_PROBE_EVERY_S = 1.0  # how often a worker looks for the owners of the partitions it is in front on
CONTROL = -2  # the `partition` of the control queue's deliveries
ALIVE_TIMEOUT_S = 3.0  # a liveness check's connect and answer, at most


class EngineSource(Forwarding):
    """Batches of the partitions this worker is active on; the interface of `MqttSource`."""

    def __init__(
        self,
        parameters: Sequence[pika.ConnectionParameters],
        plan: PartitionPlan,
        *,
        batch_messages: int = 2_000,
        batch_bytes: int = 1024 * 1024,
        prefetch: int = 1_000,
        window_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.parameters = parameters
        self._probe_parameters = [short_lived(p) for p in parameters]
        self.plan = plan
        self.subscription = f"partitions {', '.join(map(str, plan.share))} of {plan.exchange}"
        self._batch_messages = batch_messages
        self._batch_bytes = batch_bytes
        self._prefetch = prefetch  # unacknowledged deliveries per partition
        self._window_bytes = window_bytes  # payload waiting, at most (+1 message: _on_delivery)
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # pika's thread waits here when full
        self._pending: list[Message] = []
        self._pending_bytes = 0
        self._closing = threading.Event()
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None  # pika's thread alone uses it
        self._forwarding: BlockingChannel | None = None  # confirm mode; pika's thread alone
        # False: this worker cannot run the gateway (its command publisher did not start), so
        # it leaves the control queue to the others. Set before start().
        self.consumes_control = True
        self._probing: BlockingChannel | None = None  # control probes; pika's thread alone
        # The connection (generation) a forward failed on: it is closed, and its unacknowledged
        # deliveries come again on a new one. Only that one: a late failure of an old
        # connection must not tear down its successor.
        self._reconnect_on = -1
        self.generation = 0  # which connection delivered a message; acks go only to that one
        self.connected = False
        self.caught_up = True
        self.messages_received = 0
        self._released: set[int] = set()  # stepped back from, not yet let go by the consumer
        # Stepped back from, and delivered to us again all the same (pika's thread only).
        self._active_again: set[int] = set()
        # This process among the workers of its number over time: a partition's owner file
        # names it, and a new owner asks whether this one is alive, not a restarted successor.
        self.incarnation = secrets.token_hex(4)
        self.holding: frozenset[int] = frozenset()  # what the consumer took over (its thread)
        # Deliveries of the current connection not acknowledged yet, per partition: a
        # partition stepped back from is handed over once its count is 0 (partition_state.py).
        self._unacked: collections.Counter[int] = collections.Counter()
        self._last_error = "no answer yet"
        self._worker_taken = False  # another process holds this worker's number
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived: asyncio.Event | None = None
        self._subscribed: asyncio.Event | None = None
        self._full: asyncio.Event | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, *, timeout_s: float = 15.0) -> None:
        """Connects, declares the partitions and consumes them; raises EngineUnreachable if
        that fails within `timeout_s`."""
        self._loop = asyncio.get_running_loop()
        self._arrived = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._full = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="engine-source", daemon=True)
        self._thread.start()
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout_s)
        except TimeoutError:
            await self.close()
            raise EngineUnreachable(
                f"the engine at {', '.join(f'{p.host}:{p.port}' for p in self.parameters)} "
                "did not let "
                f"ingest consume within {timeout_s:g} s ({self._last_error}); check "
                "MOCLO_ENGINE_URL, that ingest's login is an ingest account of the registry, "
                "and that the engine's auth service runs"
            ) from None

    async def close(self) -> None:
        self._closing.set()
        with self._room:
            self._room.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)

    # -- what the consumer calls -----------------------------------------------------------

    async def next_batch(self, *, linger_s: float) -> list[Message]:
        """Waits for a delivery, then up to `linger_s` for more; returns up to a batch."""
        assert self._arrived is not None, "start() first"
        assert self._full is not None
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
        return batch

    def take_pending(self, at_most: int) -> list[Message]:
        with self._lock:
            return self._take(min(at_most, self._batch_messages))

    def _take(self, at_most: int) -> list[Message]:
        batch, size = split_batch(self._pending, at_most, self._batch_bytes)
        self._pending_bytes -= size
        self._room.notify_all()
        return batch

    def _is_full(self) -> bool:
        return (
            len(self._pending) >= self._batch_messages or self._pending_bytes >= self._batch_bytes
        )

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def take_released(self) -> set[int]:
        """The partitions stepped back from since the last call (their devices are another
        worker's to judge from now on)."""
        with self._lock:
            released, self._released = self._released, set()
        return released

    def unacked(self, n: int) -> int:
        """Deliveries of partition `n` on the current connection not acknowledged yet."""
        with self._lock:
            return self._unacked[n]

    async def worker_alive(self, worker: int, incarnation: str) -> bool:
        """Whether that process (`incarnation`) of worker `worker` is connected to the engine
        (holds its liveness queue). Asked on a short-lived connection of its own, on a thread:
        pika's thread may be blocked for seconds waiting for room in the window
        (`_on_delivery`). An answer that does not come within `ALIVE_TIMEOUT_S`, or an error,
        counts as gone (said): a take-over then goes on from the snapshot and the stored
        changes instead of waiting for a release that may never come. False when this worker
        is not connected itself."""
        if self._connection is None:
            return False
        queue = self.plan.alive_queue(worker, incarnation)
        try:
            probe = asyncio.to_thread(probe_alive, self._probe_parameters, queue)
            return await asyncio.wait_for(probe, ALIVE_TIMEOUT_S)
        except (TimeoutError, pika.exceptions.AMQPError, OSError) as exc:
            log.warning("could not ask whether worker %d is alive (%r): taken as gone",
                        worker, exc)  # fmt: skip
            return False

    def ack(self, messages: list[Message]) -> int:
        """Acknowledges stored deliveries of the current connection; returns how many."""
        generation, connection = self.generation, self._connection
        tags = [m.mid for m in messages if m.connection == generation]
        with self._lock:
            self._unacked.subtract(m.partition for m in messages if m.connection == generation)
        if tags and connection is not None:
            with contextlib.suppress(pika.exceptions.ConnectionWrongStateError):
                connection.add_callback_threadsafe(functools.partial(self._ack, tags, generation))
        return len(tags)

    # -- pika's thread ---------------------------------------------------------------------

    def _ack(self, tags: list[int], generation: int) -> None:
        channel = self._channel
        if generation != self.generation or channel is None or not channel.is_open:
            return  # that connection is gone: RabbitMQ delivers them again
        for tag in tags:
            channel.basic_ack(tag)

    def _run(self) -> None:
        """Connects and consumes until closed, connecting again with a capped backoff."""
        delay = 0.5
        while not self._closing.is_set():
            try:
                self._session()
                delay = 0.5
            except (pika.exceptions.AMQPError, OSError) as exc:
                self._last_error = self._last_error if self._worker_taken else repr(exc)
                log.warning("engine connection lost (%r); connecting again in %.1f s", exc, delay)
            except Exception:  # a bug here must not stop ingest for good: said, and retried
                self._last_error = "an unexpected error (in the log)"
                log.exception("the engine source failed; connecting again in %.1f s", delay)
            with self._lock:
                self.generation += 1  # acknowledgements of that connection are never sent
                self._unacked.clear()
                self._active_again.clear()
                self._pending = [m for m in self._pending if m.connection == self.generation]
                self._pending_bytes = sum(len(m.payload) for m in self._pending)
            self.connected, self._connection, self._channel = False, None, None
            self._forwarding = self._probing = None
            self._closing.wait(delay)  # a backoff, and wakes at once when closing
            delay = min(delay * 2, 10.0)

    def _session(self) -> None:
        # pika tries the nodes in order: a node that is down costs one refused connect.
        connection = BlockingConnection(list(self.parameters))
        try:
            channel = connection.channel()
            channel.basic_qos(prefetch_count=self._prefetch)
            declare_partitions(channel, self.plan)
            self._connection, self._channel = connection, channel
            generation = self.generation
            tags = {n: self._consume(channel, n, generation) for n in self.plan.share}
            # Alive only once consuming its share: a worker that sees this queue steps back
            # from these partitions, which must then find this worker's consumer there.
            self._declare_alive(channel)
            for n in sorted(set(range(self.plan.partitions)) - set(self.plan.share)):
                tags[n] = self._consume(channel, n, generation)
            if self.plan.control_bindings and self.consumes_control:
                # After the partitions: RabbitMQ gives it to one worker.
                self._forwarding = connection.channel()
                self._forwarding.confirm_delivery()
                callback = functools.partial(self._on_delivery, CONTROL, generation)
                channel.basic_consume(self.plan.control_queue, callback)
            self.connected = True
            assert self._loop is not None and self._subscribed is not None
            self._loop.call_soon_threadsafe(self._subscribed.set)
            log.info("consuming %s (standing by for the rest)", self.subscription)
            stepped_back: set[int] = set()
            next_probe = 0.0
            while not self._closing.is_set() and self._reconnect_on != generation:
                connection.process_data_events(time_limit=0.1)
                if time.monotonic() >= next_probe:
                    next_probe = time.monotonic() + _PROBE_EVERY_S
                    if self.plan.control_bindings:
                        self._probing = probe_control(connection, self._probing, self.plan)
                    self._rebalance(connection, channel, tags, stepped_back, generation)
        finally:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                if connection.is_open:
                    connection.close()

    def _declare_alive(self, channel: BlockingChannel) -> None:
        """This worker's liveness queue; held by another connection, another process runs
        with this worker's number (or this worker's last connection is not closed yet)."""
        self._worker_taken = False
        try:
            channel.queue_declare(self.plan.alive_queue(self.plan.worker), exclusive=True)
            alive = self.plan.alive_queue(self.plan.worker, self.incarnation)
            channel.queue_declare(alive, exclusive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == RESOURCE_LOCKED:
                self._worker_taken = True
                self._last_error = (
                    f"worker {self.plan.worker}/{self.plan.workers} is running elsewhere (its "
                    f"queue {self.plan.alive_queue(self.plan.worker)} is held): give each "
                    "worker its own number with --engine-worker I/W"
                )
                log.error("%s", self._last_error)
            raise

    def _consume(
        self, channel: BlockingChannel, n: int, generation: int, *, behind: bool = False
    ) -> str:
        on_delivery = self._on_delivery_behind if behind else self._on_delivery
        callback = functools.partial(on_delivery, n, generation)
        return str(channel.basic_consume(self.plan.queue(n), callback))

    def _on_delivery_behind(self, n: int, generation: int, *delivery: Any) -> None:
        """A delivery to a consumer that stepped back: RabbitMQ made it the active one again."""
        self._active_again.add(n)
        self._on_delivery(n, generation, *delivery)

    def _rebalance(
        self,
        connection: BlockingConnection,
        channel: BlockingChannel,
        tags: dict[int, str],
        stepped_back: set[int],
        generation: int,
    ) -> None:
        """Steps back from each other worker's partition while that worker is alive, so
        that its consumer, behind ours, becomes the active one (RabbitMQ 3.10 makes the
        first consumer active and keeps it so: balance is ours to restore). Once, and again
        if deliveries come to us all the same: that worker died and came back between two
        looks (a restart, or this worker paused), and its new consumer stands behind ours."""
        alive: dict[int, bool] = {}
        for n in sorted(set(tags) - set(self.plan.share)):
            owner = self.plan.preferred(n)
            if owner not in alive:
                alive[owner] = is_alive(connection, self.plan.alive_queue(owner))
            if not alive[owner]:
                stepped_back.discard(n)  # once it is back, step back again
            elif n not in stepped_back or (n in self._active_again and n in self.holding):
                # (Again only once the consumer took over what came: the new owner then waits
                # for this worker's release instead of judging later readings first.)
                channel.basic_cancel(tags[n])
                self._active_again.discard(n)
                tags[n] = self._consume(channel, n, generation, behind=True)
                stepped_back.add(n)
                with self._lock:
                    self._released.add(n)
                log.info(
                    "stepped back from partition %d for worker %d (behind it, if in front)",
                    n,
                    owner,
                )

    def _on_delivery(
        self,
        n: int,
        generation: int,
        channel: BlockingChannel,
        method: Any,
        properties: Any,
        body: bytes,
    ) -> None:
        topic = device_topic = amqp_topic(method.routing_key)
        if n == CONTROL and method.exchange == self.plan.probe_exchange:
            topic = device_topic = PROBE_TOPIC
        elif n >= 0 and properties.headers and FORWARDED_TOPIC in properties.headers:
            topic = forwarded_topic(topic, properties.headers[FORWARDED_TOPIC])
        message = Message(
            topic,
            body,
            method.delivery_tag,
            1,
            time.time_ns(),
            generation,
            n,
            device_topic if topic != device_topic else "",
        )
        with self._lock:
            was_full = self._is_full()
            self._pending.append(message)
            self._pending_bytes += len(body)
            self._unacked[n] += 1
            self.messages_received += 1
            full = not was_full and self._is_full()
        assert self._loop is not None and self._arrived is not None and self._full is not None
        self._loop.call_soon_threadsafe(self._arrived.set)
        if full:
            self._loop.call_soon_threadsafe(self._full.set)
        with self._room:
            # RabbitMQ has no byte limit for a consumer (prefetch counts messages, and arrays
            # of readings are fifty times larger than single ones): while `window_bytes` wait,
            # take no more deliveries, so TCP holds the broker back. Awake every 5 s all the
            # same, so that heartbeats are answered: the window grows by a message each time.
            self._room.wait_for(
                lambda: self._pending_bytes < self._window_bytes or self._closing.is_set(),
                timeout=5.0,
            )


class EngineUnreachable(ConnectionError):
    """The engine did not let ingest connect and consume: the message says what to check."""
