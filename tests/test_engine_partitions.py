"""Proof of concept for issue 19's partitioning, on the `engine` cluster (the design is in
docs/decisions/0001-distributed-engine.md, "Partitions, workers and balance"):

readings are keyed by device over P quorum queues behind an `x-consistent-hash` exchange bound
from the MQTT exchange; each queue is single-active-consumer, so exactly one worker at a time
consumes it, in order; W workers balance themselves by consuming their share of the
partitions first and the rest only as standbys (RabbitMQ 3.10 makes the first consumer of a
queue its active one).

The workers here are AMQP consumers of the test (pika): the product's worker is the next step.
"""

from __future__ import annotations

import collections
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pika
import pytest

from access.registry import Credentials, DeviceSpec
from devices.topics import telemetry_topic
from tests.conftest import Engine
from tests.helpers import cow_json, wait_until
from tests.test_broker_access import Peer
from tests.test_engine_cluster import V311

PARTITIONS, WORKERS, DEVICES, READINGS = 4, 2, 40, 10
EXCHANGE = "moclo.partition.telemetry"
COW = "cow_tracker"


def partition_queue(n: int) -> str:
    return f"{EXCHANGE}.{n}"


def declare_partitions(channel: pika.adapters.blocking_connection.BlockingChannel) -> None:
    """Idempotent: the exchange, its binding from MQTT's exchange (telemetry only: the whole
    routing key is hashed, and it holds tenant, type and device), and P quorum queues."""
    channel.exchange_declare(EXCHANGE, "x-consistent-hash", durable=True)
    channel.exchange_bind(EXCHANGE, "amq.topic", routing_key="moclo.*.*.*.telemetry")
    for n in range(PARTITIONS):
        arguments = {"x-queue-type": "quorum", "x-single-active-consumer": True}
        channel.queue_declare(partition_queue(n), durable=True, arguments=arguments)
        channel.queue_bind(partition_queue(n), EXCHANGE, routing_key="1")  # equal weights


def share(worker: int) -> list[int]:
    """The partitions a worker consumes first: every W-th, so shares differ by at most one."""
    return list(range(worker, PARTITIONS, WORKERS))


@dataclass
class Worker:
    """One consumer connection (to its own node) that records what it was given, per queue."""

    index: int
    port: int
    login: Credentials
    tenant: str
    got: dict[str, list[tuple[str, int]]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    error: BaseException | None = None

    def run(self, own_consumed: threading.Barrier, stop: threading.Event) -> None:
        try:
            self._consume(own_consumed, stop)
        except BaseException as exc:  # surfaced by the test after the run
            self.error = exc
            own_consumed.abort()

    def _consume(self, own_consumed: threading.Barrier, stop: threading.Event) -> None:
        credentials = pika.PlainCredentials(self.login.username, self.login.password)
        parameters = pika.ConnectionParameters("127.0.0.1", self.port, "/", credentials)
        connection = pika.BlockingConnection(parameters)
        channel = connection.channel()
        channel.basic_qos(prefetch_count=50)
        mine = share(self.index)
        for n in mine:
            channel.basic_consume(partition_queue(n), self._receiver(partition_queue(n)))
        own_consumed.wait(30)  # every worker holds its share before anyone stands by
        for n in sorted(set(range(PARTITIONS)) - set(mine)):
            channel.basic_consume(partition_queue(n), self._receiver(partition_queue(n)))
        while not stop.is_set():
            connection.process_data_events(time_limit=0.1)
        connection.close()

    def _receiver(self, queue: str) -> Callable[[Any, Any, Any, bytes], None]:
        def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
            device = method.routing_key.split(".")[3]
            if method.routing_key.split(".")[1] == self.tenant:
                with self.lock:
                    self.got[queue].append((device, orjson.loads(body)["seq"]))
            channel.basic_ack(method.delivery_tag)  # after "storing" (recording) it

        return on_message


@pytest.fixture
def partitions(engine: Engine) -> Credentials:
    """The partitions declared by an ingest login (the role allowed to), which is returned."""
    login = engine.registry.add_account("ingest", f"ingest-{uuid.uuid4().hex[:8]}")
    port = engine.cluster.nodes[0].ports.amqp
    parameters = pika.ConnectionParameters(
        "127.0.0.1", port, "/", pika.PlainCredentials(login.username, login.password)
    )
    with pika.BlockingConnection(parameters) as connection:
        declare_partitions(connection.channel())
    return login


def test_each_partition_is_consumed_by_one_worker_in_order_and_workers_are_balanced(
    engine: Engine, partitions: Credentials
) -> None:
    tenant = f"farm-{uuid.uuid4().hex[:8]}"
    specs = [DeviceSpec(tenant, COW, f"cow-{n}") for n in range(DEVICES)]
    devices = [credentials for _, credentials in engine.registry.add_devices(specs)]
    nodes = engine.cluster.nodes
    workers = [  # at r2 and r3: the declaring connection was r1's
        Worker(w, nodes[(w + 1) % len(nodes)].ports.amqp, partitions, tenant)
        for w in range(WORKERS)
    ]
    # The test is the barrier's last party: past it, every worker holds its share.
    own_consumed, stop = threading.Barrier(WORKERS + 1), threading.Event()
    threads = [threading.Thread(target=w.run, args=(own_consumed, stop)) for w in workers]
    for thread in threads:
        thread.start()
    try:
        own_consumed.wait(30)
        for n, credentials in enumerate(devices):  # each device at a node of its own turn
            peer = Peer(
                nodes[n % len(nodes)].ports.mqtt,
                credentials.username,
                (credentials.username, credentials.password),
                protocol=V311,
                client_id=credentials.username,
            )
            topic = telemetry_topic(engine.prefix, tenant, COW, f"cow-{n}")
            for seq in range(1, READINGS + 1):
                assert peer.publish(topic, cow_json(1795327200 + seq, seq)) == 0
            peer.close()

        def received() -> int:
            return sum(len(v) for w in workers for v in w.got.values())

        wait_until(lambda: received() == DEVICES * READINGS, timeout_s=30, what="all readings")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert [w.error for w in workers] == [None] * WORKERS
    queues = [partition_queue(n) for n in range(PARTITIONS)]
    by_queue = {q: [w.index for w in workers if w.got.get(q)] for q in queues}
    # Exactly one worker consumed each partition (every partition got some of the 40 devices).
    assert all(len(owners) == 1 for owners in by_queue.values()), by_queue
    # Balanced: each worker holds its share, P/W partitions.
    held = collections.Counter(owners[0] for owners in by_queue.values())
    assert sorted(held.values()) == [PARTITIONS // WORKERS] * WORKERS, by_queue
    # Each device on one partition, its readings in the order sent.
    per_device: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    for worker in workers:
        for queue, items in worker.got.items():
            for device, seq in items:
                per_device[device].append((queue, seq))
    for device, items in per_device.items():
        assert len({queue for queue, _ in items}) == 1, f"{device} spread over partitions"
        assert [seq for _, seq in items] == list(range(1, READINGS + 1)), device
