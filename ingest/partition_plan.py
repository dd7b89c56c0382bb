"""The engine's partitions of the telemetry: their names, which a worker consumes first, and
their declaration (docs/decisions/0001-distributed-engine.md, "Partitions, workers and
balance")."""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

MQTT_EXCHANGE = "amq.topic"
PARTITION_PREFIX = "moclo.partition."  # the names access/engine_auth.py lets ingest declare
FORWARDED_TOPIC = "moclo-topic"  # header: the MQTT topic of a forwarded acknowledgement
RESOURCE_LOCKED = 405  # an exclusive queue held by another connection: its worker is alive
# The topic of a control probe: what every worker publishes to the control queue about once a
# second (through a fanout exchange beside it, which only ingest's logins may write), so that
# whoever RabbitMQ made its active consumer learns it from a delivery even when nothing else
# comes (ingest/control.py). Not an MQTT topic: no MQTT message can carry it.
PROBE_TOPIC = "moclo-control-probe"
_PROBE_TTL_MS = "10000"  # a probe nobody took in 10 s says nothing more: RabbitMQ drops it

log = logging.getLogger("moclo.ingest.engine")


@dataclass(frozen=True, slots=True)
class PartitionPlan:
    """Which queues exist and which this worker consumes first."""

    partitions: int
    worker: int
    workers: int
    bindings: tuple[str, ...]  # AMQP routing keys bound from the MQTT exchange
    name: str = "telemetry"
    # What the control queue takes from the MQTT exchange: the downlink, acknowledgements
    # and alert changes (ingest/control.py); none, no control queue.
    control_bindings: tuple[str, ...] = ()

    @property
    def exchange(self) -> str:
        return f"{PARTITION_PREFIX}{self.name}"

    def queue(self, n: int) -> str:
        return f"{self.exchange}.{n}"

    @property
    def control_queue(self) -> str:
        """The one queue beside the partitions whose consumer runs the gateway and the
        automations for the whole set (one worker at a time: single active consumer)."""
        return f"{self.exchange}.control"

    @property
    def probe_exchange(self) -> str:
        return f"{self.control_queue}.probe"

    def alive_queue(self, worker: int, incarnation: str = "") -> str:
        """Worker `worker`'s liveness queue, or that of one process of it."""
        return f"{self.exchange}.worker.{worker}" + (f".{incarnation}" if incarnation else "")

    @property
    def share(self) -> tuple[int, ...]:
        """This worker's partitions: every W-th, so shares differ by at most one."""
        return tuple(range(self.worker, self.partitions, self.workers))

    def preferred(self, n: int) -> int:
        """The worker whose share partition `n` is."""
        return n % self.workers


def amqp_topic(routing_key: str) -> str:
    """The MQTT topic of a routing key: RabbitMQ's MQTT plugin swaps `/` and `.`."""
    return routing_key.translate(_SWAP)


_SWAP = str.maketrans("./", "/.")


def declare_partitions(channel: BlockingChannel, plan: PartitionPlan) -> None:
    """Idempotent: the consistent-hash exchange, its bindings from the MQTT exchange (telemetry
    only: the whole routing key is hashed), P single-active-consumer quorum queues, and the
    control queue (the same kind) bound from the MQTT exchange directly."""
    channel.exchange_declare(plan.exchange, "x-consistent-hash", durable=True)
    for routing_key in plan.bindings:
        channel.exchange_bind(plan.exchange, MQTT_EXCHANGE, routing_key=routing_key)
    arguments = {"x-queue-type": "quorum", "x-single-active-consumer": True}
    for n in range(plan.partitions):
        channel.queue_declare(plan.queue(n), durable=True, arguments=arguments)
        channel.queue_bind(plan.queue(n), plan.exchange, routing_key="1")  # equal weights
    if plan.control_bindings:
        channel.queue_declare(plan.control_queue, durable=True, arguments=arguments)
        for routing_key in plan.control_bindings:
            channel.queue_bind(plan.control_queue, MQTT_EXCHANGE, routing_key=routing_key)
        channel.exchange_declare(plan.probe_exchange, "fanout", durable=True)
        channel.queue_bind(plan.control_queue, plan.probe_exchange)


def probe_control(
    connection: BlockingConnection, channel: BlockingChannel | None, plan: PartitionPlan
) -> BlockingChannel | None:
    """Publishes one probe (PROBE_TOPIC) to the control queue on `channel` (opened if None or
    closed); returns the channel for the next, or None if it failed (said; tried again then).
    RabbitMQ hands the queue to a standby silently when its holder dies: the standby learns
    that it holds it from a delivery."""
    try:
        if channel is None or not channel.is_open:
            channel = connection.channel()
        properties = pika.BasicProperties(expiration=_PROBE_TTL_MS)
        channel.basic_publish(plan.probe_exchange, "", b"", properties)
    except pika.exceptions.AMQPChannelError as exc:
        log.warning("could not probe the control queue (%r)", exc)
        return None
    return channel


def forwarded_topic(topic: str, claimed: object) -> str:
    """The topic a forwarded acknowledgement was sent on, if the header names an
    acknowledgement topic of the tenant of `topic` (the device's telemetry topic it was routed
    by); else `topic` (the header ignored, and said)."""
    if isinstance(claimed, bytes):
        claimed = claimed.decode(errors="replace")
    tenant_head = topic.rsplit("/", 3)[0] + "/acks"  # {prefix}/{tenant}/acks
    if isinstance(claimed, str) and (
        claimed == tenant_head or claimed.startswith(tenant_head + "/")
    ):
        return claimed
    log.warning("ignored a %s header %.80r on %s: not an acknowledgement of its tenant",
                FORWARDED_TOPIC, claimed, topic)  # fmt: skip
    return topic


def is_alive(connection: BlockingConnection, queue: str) -> bool:
    """Whether another connection holds the exclusive queue `queue` (its worker is alive).
    Asked on a channel of its own, since either answer but "yours" closes the channel."""
    probe = connection.channel()
    try:
        probe.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        return bool(exc.reply_code == RESOURCE_LOCKED)
    with contextlib.suppress(pika.exceptions.AMQPError):
        probe.close()
    return True


def short_lived(parameters: pika.ConnectionParameters) -> pika.ConnectionParameters:
    """`parameters` for a liveness check: one try per node, each bounded, so that its thread
    ends soon after the source's ALIVE_TIMEOUT_S even when the engine does not answer."""
    probe = copy.copy(parameters)
    probe.connection_attempts = 1
    probe.socket_timeout = probe.stack_timeout = probe.blocked_connection_timeout = 2.0
    return probe


def probe_alive(parameters: list[pika.ConnectionParameters], queue: str) -> bool:
    """`is_alive` on a connection of its own (short_lived parameters), closed after."""
    connection = BlockingConnection(parameters)
    try:
        return is_alive(connection, queue)
    finally:
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            connection.close()
