"""The engine's partitions of the telemetry: their names, which a worker consumes first, and
their declaration (docs/decisions/0001-distributed-engine.md, "Partitions, workers and
balance")."""

from __future__ import annotations

from dataclasses import dataclass

from pika.adapters.blocking_connection import BlockingChannel

MQTT_EXCHANGE = "amq.topic"
PARTITION_PREFIX = "moclo.partition."  # the names access/engine_auth.py lets ingest declare


@dataclass(frozen=True, slots=True)
class PartitionPlan:
    """Which queues exist and which this worker consumes first."""

    partitions: int
    worker: int
    workers: int
    bindings: tuple[str, ...]  # AMQP routing keys bound from the MQTT exchange
    name: str = "telemetry"

    @property
    def exchange(self) -> str:
        return f"{PARTITION_PREFIX}{self.name}"

    def queue(self, n: int) -> str:
        return f"{self.exchange}.{n}"

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
    only: the whole routing key is hashed), and P single-active-consumer quorum queues."""
    channel.exchange_declare(plan.exchange, "x-consistent-hash", durable=True)
    for routing_key in plan.bindings:
        channel.exchange_bind(plan.exchange, MQTT_EXCHANGE, routing_key=routing_key)
    arguments = {"x-queue-type": "quorum", "x-single-active-consumer": True}
    for n in range(plan.partitions):
        channel.queue_declare(plan.queue(n), durable=True, arguments=arguments)
        channel.queue_bind(plan.queue(n), plan.exchange, routing_key="1")  # equal weights
