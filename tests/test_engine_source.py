"""ingest/engine_source.py on its own: which partitions a worker takes first, topics back from
routing keys, and the byte window on the session's cluster."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import uuid

import pika
import pytest

from core.settings import Settings, SettingsError
from devices.topics import acknowledgement_topic, telemetry_topic
from ingest import engine_forward
from ingest.engine_forward import ForwardFailed
from ingest.engine_source import EngineSource, EngineUnreachable
from ingest.engine_wiring import engine_nodes
from ingest.partition_plan import PartitionPlan, amqp_topic
from moclo.stack import free_port
from tests.conftest import Engine
from tests.helpers import wait_until
from tests.test_broker_access import Peer
from tests.test_engine_cluster import V311


@pytest.mark.parametrize(
    ("partitions", "workers", "shares"),
    [
        (4, 2, [(0, 2), (1, 3)]),
        (4, 3, [(0, 3), (1,), (2,)]),
        (5, 2, [(0, 2, 4), (1, 3)]),
        (2, 3, [(0,), (1,), ()]),  # more workers than partitions: a standby with none
        (1, 1, [(0,)]),
    ],
    ids=["even", "uneven", "odd-partitions", "idle-worker", "one"],
)
def test_shares_cover_every_partition_once_within_one_of_each_other(
    partitions: int, workers: int, shares: list[tuple[int, ...]]
) -> None:
    plans = [PartitionPlan(partitions, w, workers, ("b",)) for w in range(workers)]
    assert [plan.share for plan in plans] == shares
    for plan in plans:
        assert all(plan.preferred(n) == plan.worker for n in plan.share)
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(
    ("routing_key", "topic"),
    [
        ("moclo.farm.cow_tracker.c1.telemetry", "moclo/farm/cow_tracker/c1/telemetry"),
        # RabbitMQ's MQTT plugin swaps the two: a `.` in a topic arrives as `/`.
        ("moclo.farm.cow_tracker.c/1.telemetry", "moclo/farm/cow_tracker/c.1/telemetry"),
    ],
    ids=["plain", "dot-in-topic"],
)
def test_routing_keys_become_the_mqtt_topics_devices_sent(routing_key: str, topic: str) -> None:
    assert amqp_topic(routing_key) == topic


def test_the_source_stops_taking_deliveries_while_its_byte_window_is_full(engine: Engine) -> None:
    tenant = f"farm-{uuid.uuid4().hex[:8]}"
    device = engine.registry.add_device(tenant, "cow_tracker", "c1")
    ingest = engine.registry.add_account("ingest", f"ingest-{uuid.uuid4().hex[:8]}")
    node = engine.cluster.nodes[2]
    plan = PartitionPlan(1, 0, 1, (f"moclo.{tenant}.*.*.telemetry",), f"t{uuid.uuid4().hex[:8]}")
    size, count, window = 10_000, 60, 50_000
    parameters = pika.ConnectionParameters(
        "127.0.0.1", node.ports.amqp, "/", pika.PlainCredentials(ingest.username, ingest.password)
    )

    async def run() -> None:
        source = EngineSource([parameters], plan, batch_bytes=size, window_bytes=window)
        await source.start()  # declares the partition: what is published now is kept
        try:
            peer = Peer(node.ports.mqtt, "device", (device.username, device.password),
                        protocol=V311, client_id=device.username)  # fmt: skip
            topic = telemetry_topic(engine.prefix, tenant, "cow_tracker", "c1")
            for _ in range(count):
                assert peer.publish(topic, b"x" * size) == 0
            peer.close()
            await asyncio.to_thread(
                wait_until, lambda: source.pending_bytes >= window, what="the window full"
            )
            # Full: the thread waits for room, so no more than the message that filled it.
            assert source.pending_bytes < window + size, source.pending_bytes
            assert source.messages_received < count
            taken = 0
            while taken < count:  # room again: everything comes, acknowledged batch by batch
                batch = await source.next_batch(linger_s=0.01)
                assert source.ack(batch) == len(batch)
                taken += len(batch)
            assert taken == count
        finally:
            await source.close()

    asyncio.run(run())


def test_a_second_worker_with_the_same_number_is_told_to_take_its_own(engine: Engine) -> None:
    ingest = engine.registry.add_account("ingest", f"ingest-{uuid.uuid4().hex[:8]}")
    plan = PartitionPlan(2, 1, 2, ("moclo.nobody.*.*.telemetry",), f"t{uuid.uuid4().hex[:8]}")
    parameters = pika.ConnectionParameters(
        "127.0.0.1",
        engine.cluster.nodes[0].ports.amqp,
        "/",
        pika.PlainCredentials(ingest.username, ingest.password),
    )

    async def run() -> None:
        first = EngineSource([parameters], plan)
        await first.start()  # positive control: worker 1/2 consumes
        try:
            assert first.connected
            with pytest.raises(
                EngineUnreachable, match=r"worker 1/2 is running elsewhere.*--engine-worker I/W"
            ):
                await EngineSource([parameters], plan).start(timeout_s=5)
        finally:
            await first.close()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("url", "nodes"),
    [
        ("amqp://r1", [("r1", 5672)]),
        ("amqp://r1:5673/", [("r1", 5673)]),
        ("amqp://r1:5672,r2:5672,r3", [("r1", 5672), ("r2", 5672), ("r3", 5672)]),
    ],
    ids=["default-port", "port", "three-nodes"],
)
def test_the_engine_url_names_the_nodes_in_order(url: str, nodes: list[tuple[str, int]]) -> None:
    assert Settings(engine_url=url).engine_url == url
    assert engine_nodes(url) == nodes


@pytest.mark.parametrize(
    ("setting", "value", "said"),
    [
        ("engine_url", "amqp://user:secret@r1:5672", "without a login"),  # the login is ingest's
        ("engine_url", "mqtt://r1:1883", r"amqp://HOST\[:PORT\]"),
        ("engine_worker", "2/2", "workers are numbered 0 to W-1"),
        ("engine_worker", "1/0", "workers are numbered 0 to W-1"),
        ("engine_partitions", "0", "--engine-partitions"),
    ],
    ids=["password-in-url", "not-amqp", "worker-beyond", "no-workers", "no-partitions"],
)
def test_engine_settings_out_of_range_are_refused_with_what_is_allowed(
    setting: str, value: str, said: str
) -> None:
    with pytest.raises(SettingsError, match=said) as refused:
        Settings.load({}, **{setting: value})
    assert "secret" not in str(refused.value)


def test_a_worker_whose_first_node_is_down_consumes_from_the_next(engine: Engine) -> None:
    ingest = engine.registry.add_account("ingest", f"ingest-{uuid.uuid4().hex[:8]}")
    plan = PartitionPlan(1, 0, 1, ("moclo.nobody.*.*.telemetry",), f"t{uuid.uuid4().hex[:8]}")
    credentials = pika.PlainCredentials(ingest.username, ingest.password)
    down = pika.ConnectionParameters("127.0.0.1", free_port(), "/", credentials)
    node = engine.cluster.nodes[1].ports.amqp
    up = pika.ConnectionParameters("127.0.0.1", node, "/", credentials)

    async def run() -> None:
        with pytest.raises(EngineUnreachable):  # control: the node that is down, alone
            await EngineSource([down], plan).start(timeout_s=2)
        source = EngineSource([down, up], plan)
        await source.start()
        try:
            assert source.connected
        finally:
            await source.close()

    asyncio.run(run())


def forwarding_source(engine: Engine) -> tuple[EngineSource, str]:
    """A source of one partition with a control queue (so it forwards), and a tenant's cow's
    telemetry topic that routes to that partition."""
    tenant = f"farm-{uuid.uuid4().hex[:8]}"
    ingest = engine.registry.add_account("ingest", f"ingest-{uuid.uuid4().hex[:8]}")
    plan = PartitionPlan(1, 0, 1, (f"moclo.{tenant}.*.*.telemetry",), f"t{uuid.uuid4().hex[:8]}",
                         control_bindings=(f"moclo.{tenant}.acks.#",))  # fmt: skip
    parameters = pika.ConnectionParameters(
        "127.0.0.1",
        engine.cluster.nodes[0].ports.amqp,
        "/",
        pika.PlainCredentials(ingest.username, ingest.password),
    )
    return EngineSource([parameters], plan), telemetry_topic(
        engine.prefix, tenant, "cow_tracker", "c1"
    )


def test_a_batch_of_2000_forwarded_acknowledgements_is_not_taken_for_a_dead_connection(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each forwarded acknowledgement waits for its confirm (a quorum write, 2-9 ms here), so
    2,000 take longer than the deadline, here 2 s: the deadline holds for a stretch without a
    confirm, not for the batch (else: timeout, reconnect, redelivery, the same again)."""
    monkeypatch.setattr(engine_forward, "FORWARD_TIMEOUT_S", 2.0)
    source, cow = forwarding_source(engine)
    acks = acknowledgement_topic(engine.prefix, cow.split("/")[1], "op")
    count = 2_000

    async def run() -> None:
        await source.start()
        try:
            generation = source.generation
            await source.forward([(amqp_topic(cow), acks, b"%d" % i) for i in range(count)])
            came: list[bytes] = []
            while len(came) < count:  # all of them in the partition, in order, once
                batch = await source.next_batch(linger_s=0.05)
                came += [m.payload for m in batch if m.partition == 0]
                source.ack(batch)
            assert came == [b"%d" % i for i in range(count)]
            assert source.generation == generation  # no reconnect on the way
        finally:
            await source.close()

    asyncio.run(run())


def test_a_forward_failing_on_an_old_connection_leaves_the_current_one_alone(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forward that fails late, for a connection already replaced, must not close its
    successor (whose deliveries would all come again). The failure is made on pika's thread
    as a forward of an older connection would meet it."""
    monkeypatch.setattr(engine_forward, "FORWARD_TIMEOUT_S", 2.0)
    source, cow = forwarding_source(engine)
    acks = acknowledgement_topic(engine.prefix, cow.split("/")[1], "op")

    async def run() -> None:
        await source.start()
        try:
            generation = source.generation
            stale: concurrent.futures.Future[None] = concurrent.futures.Future()
            assert source._connection is not None
            source._connection.add_callback_threadsafe(functools.partial(
                source._forward, [(amqp_topic(cow), acks, b"old")], generation - 1, stale, [0]
            ))  # fmt: skip
            with pytest.raises(ForwardFailed, match="connection was lost"):
                await asyncio.wrap_future(stale)
            # Positive control of the same path: a forward of this connection goes through,
            # on this connection.
            await source.forward([(amqp_topic(cow), acks, b"new")])
            batch = await source.next_batch(linger_s=0.05)
            assert [m.payload for m in batch if m.partition == 0] == [b"new"]
            assert source.generation == generation
        finally:
            await source.close()

    asyncio.run(run())
