"""Ingest on the distributed engine (issue 19): workers consuming the telemetry's partitions
from the session's 3-node RabbitMQ cluster over AMQP, judging every rule for their devices.

Each worker is a process of its own (tests/engine_worker.py) with its own ingest login, so a
test can kill -9 one. Devices publish over MQTT 3.1.1 at every node; the alert changes are
watched on MQTT by a serve login, where a second raise of an episode would show as a second
alert id (InfluxDB would hide it: a point written again at the same time overwrites).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pika
import pika.exceptions
import pytest

from access.registry import Credentials, DeviceSpec
from devices.topics import alert_subscription, telemetry_topic
from ingest.partition_plan import PartitionPlan, declare_partitions
from moclo.stack import InfluxServer
from storage.alert_record import Alert
from tests.conftest import Engine
from tests.helpers import Influx, cow_json, wait_until
from tests.test_broker_access import Peer
from tests.test_engine_cluster import V311

PARTITIONS = 4
COW = "cow_tracker"
HOT, NORMAL = 40.0, 38.6
# Per device: 2 normal, 4 hot (the fever is raised at the third), 4 normal (resolved at the third).
TEMPERATURES = [NORMAL] * 2 + [HOT] * 4 + [NORMAL] * 4


@dataclass
class Fleet:
    engine: Engine
    influxdb: InfluxServer
    directory: Path
    tenant: str = field(default_factory=lambda: f"farm-{uuid.uuid4().hex[:8]}")
    partition_set: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")
    database: str = field(default_factory=lambda: f"engine_{uuid.uuid4().hex[:8]}")
    devices: list[Credentials] = field(default_factory=list)
    workers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)  # MOCLO_* for the workers, on top

    @property
    def influx(self) -> Influx:
        return Influx(self.influxdb.url, self.database)

    def add_devices(self, count: int) -> None:
        specs = [DeviceSpec(self.tenant, COW, f"cow-{n}") for n in range(count)]
        self.devices = [c for _, c in self.engine.registry.add_devices(specs)]

    def log(self, index: int) -> Path:
        return self.directory / f"worker-{index}.log"

    def start_worker(self, index: int, of: int) -> None:
        """Worker `index` of `of`, at node index+1 (MQTT and AMQP), with a login of its own."""
        login = self.engine.registry.add_account("ingest", f"ingest-{uuid.uuid4().hex[:8]}")
        node = self.engine.cluster.nodes[(index + 1) % len(self.engine.cluster.nodes)]
        environment = {
            **os.environ,
            "MOCLO_MQTT_URL": node.mqtt_url,
            "MOCLO_MQTT_USERNAME": login.username,
            "MOCLO_MQTT_PASSWORD": login.password,
            # Its own node first, then the others: a worker whose node dies goes on at another.
            "MOCLO_ENGINE_URL": self.engine_url(index + 1),
            "MOCLO_ENGINE_WORKER": f"{index}/{of}",
            "MOCLO_ENGINE_PARTITIONS": str(PARTITIONS),
            "MOCLO_INGEST_TENANTS": self.tenant,
            "MOCLO_INFLUX_URL": self.influxdb.url,
            "MOCLO_INFLUX_DB": self.database,
            "MOCLO_TOPIC_PREFIX": self.engine.prefix,
            "MOCLO_SPOOL_DIR": str(self.directory / "spool"),
            "MOCLO_HTTP_LISTEN": "off",
            "MOCLO_UNREGISTERED": "off",
            "MOCLO_REGISTRY": str(self.directory / "unused-registry.sqlite"),
            **self.settings,
        }
        with self.log(index).open("ab") as log:  # the child keeps its own copy
            self.workers[index] = subprocess.Popen(
                [sys.executable, "-m", "tests.engine_worker", self.partition_set],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(
            lambda: "consuming partitions" in self.log_text(index) or not self.running(index),
            timeout_s=60,
            what=f"worker {index} consuming",
        )
        assert self.running(index), self.log_text(index)

    def engine_url(self, first: int) -> str:
        """Every node's AMQP address, node `first` (modulo their number) first."""
        nodes = self.engine.cluster.nodes
        ordered = nodes[first % len(nodes) :] + nodes[: first % len(nodes)]
        return "amqp://" + ",".join(f"127.0.0.1:{n.ports.amqp}" for n in ordered)

    def running(self, index: int) -> bool:
        return self.workers[index].poll() is None

    def log_text(self, index: int) -> str:
        return self.log(index).read_text() if self.log(index).exists() else ""

    def taken_over(self, index: int) -> list[int]:
        """The partitions worker `index` took over (its log), in order."""
        marker = "partition "
        return [
            int(line.split(marker)[1].split()[0])
            for line in self.log_text(index).splitlines()
            if " taken over" in line and marker in line
        ]

    def publish(self, readings: range, temperatures: list[float]) -> None:
        """Readings `readings` of `temperatures` from every device, each at node n % 3, in
        rounds (every device's reading i, then i+1), as a fleet sends them: one device far
        ahead in time would make the others look silent by the tenant's clock."""
        nodes = self.engine.cluster.nodes
        t0 = int(time.time()) - 3600
        peers = [
            Peer(
                nodes[n % len(nodes)].ports.mqtt,
                device.username,
                (device.username, device.password),
                protocol=V311,
                client_id=device.username,
            )
            for n, device in enumerate(self.devices)
        ]
        try:
            for i in readings:
                for n, peer in enumerate(peers):
                    topic = telemetry_topic(self.engine.prefix, self.tenant, COW, f"cow-{n}")
                    payload = cow_json(t0 + 60 * i, i + 1, body_temp_c=temperatures[i])
                    assert peer.publish(topic, payload) == 0, f"cow-{n} reading {i} refused"
        finally:
            for peer in peers:
                peer.close()

    def publish_raw(self, n: int, payload: bytes) -> None:
        device = self.devices[n]
        peer = Peer(
            self.engine.cluster.nodes[0].ports.mqtt,
            device.username,
            (device.username, device.password),
            protocol=V311,
            client_id=device.username,
        )
        try:
            topic = telemetry_topic(self.engine.prefix, self.tenant, COW, f"cow-{n}")
            assert peer.publish(topic, payload) == 0
        finally:
            peer.close()

    def stored(self) -> int:
        return self.influx.count(COW, "seq", f"\"tenant\" = '{self.tenant}'")

    def stop(self) -> None:
        for process in self.workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


class AlertWatch:
    """Every alert change of the tenant, as published on MQTT (a serve login at r1)."""

    def __init__(self, engine: Engine, tenant: str) -> None:
        login = engine.registry.add_account("serve", f"serve-{uuid.uuid4().hex[:8]}")
        self.peer = Peer(
            engine.cluster.nodes[0].ports.mqtt,
            "alert watch",
            (login.username, login.password),
            protocol=V311,
            client_id=login.username,
        )
        assert self.peer.logged_in, f"serve's login refused: CONNACK {self.peer.connack}"
        assert self.peer.subscribe(alert_subscription(engine.prefix, tenant)) == [1]

    def changes(self) -> list[dict[str, object]]:
        return [orjson.loads(payload) for _, payload in list(self.peer.messages)]

    def raised_ids(self) -> dict[str, set[str]]:
        """Per device, the ids of the fever episodes raised."""
        return self.fever_ids("raised")

    def resolved_ids(self) -> dict[str, set[str]]:
        """Per device, the ids of the fever episodes resolved."""
        return self.fever_ids("resolved")

    def fever_ids(self, state: str) -> dict[str, set[str]]:
        ids: dict[str, set[str]] = collections.defaultdict(set)
        for change in self.changes():
            if change["state"] == state and change["rule"] == "fever":
                ids[str(change["device_id"])].add(str(change["id"]))
        return ids

    def resolved(self) -> set[str]:
        return {
            str(c["device_id"])
            for c in self.changes()
            if c["state"] == "resolved" and c["rule"] == "fever"
        }


@pytest.fixture
def fleet(engine: Engine, influxdb: InfluxServer, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(engine, influxdb, tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop()


def test_two_workers_balance_the_partitions_store_every_reading_and_raise_each_fever_once(
    fleet: Fleet,
) -> None:
    fleet.add_devices(16)
    watch = AlertWatch(fleet.engine, fleet.tenant)
    try:
        fleet.start_worker(0, 2)
        fleet.start_worker(1, 2)
        # Worker 0 came first and is in front everywhere: it steps back from worker 1's share.
        wait_until(
            lambda: fleet.log_text(0).count("stepped back from partition") == PARTITIONS // 2,
            timeout_s=15,
            what="worker 0 to step back from worker 1's partitions",
        )
        fleet.publish(range(len(TEMPERATURES)), TEMPERATURES)
        fleet.publish_raw(0, b'{"ts": "not a reading"')  # a device's bad message is data
        sent = len(fleet.devices) * len(TEMPERATURES)
        wait_until(lambda: fleet.stored() == sent, timeout_s=60, what="every reading stored")
        wait_until(
            lambda: len(watch.resolved()) == len(fleet.devices),
            timeout_s=30,
            what="every device's fever raised and resolved",
        )
    finally:
        watch.peer.close()
    assert fleet.stored() == sent  # nothing more came
    # The bad message was stored as a rejection with its reason, and acknowledged: had it
    # stopped the partition, the readings behind it would not all be stored.
    rejected = fleet.influx.query(
        f'SELECT "error" FROM "moclo_rejected" WHERE "tenant" = \'{fleet.tenant}\''
    )
    assert len(rejected) == 1 and "JSON" in str(rejected[0]["error"]), rejected
    # Each partition judged by exactly one worker, each worker holding its share.
    held = {index: fleet.taken_over(index) for index in (0, 1)}
    # (16 devices over 4 partitions: a partition may stay empty, a worker's two hardly.)
    assert held[0] and set(held[0]) <= {0, 2}, held
    assert held[1] and set(held[1]) <= {1, 3}, held
    assert len(held[0] + held[1]) == len(set(held[0] + held[1])), held
    # Each device's fever raised once: one episode, one id, on one worker's judgement.
    raised = watch.raised_ids()
    assert {device: len(ids) for device, ids in raised.items()} == {
        f"cow-{n}": 1 for n in range(len(fleet.devices))
    }, raised


# Per device, for the failover: 2 normal, 3 hot (raised at the third), then, after the kill,
# 3 hot (a new owner that forgot the episode would raise it again) and 4 normal (resolved).
BEFORE_KILL = range(5)
AFTER_KILL = range(5, 15)
FAILOVER_TEMPERATURES = [NORMAL] * 2 + [HOT] * 3 + [HOT] * 3 + [NORMAL] * 7


def open_fevers(fleet: Fleet) -> int:
    """Devices with an open fever episode in the partitions' snapshots."""
    count = 0
    for n in range(PARTITIONS):
        path = fleet.directory / "spool" / "partitions" / f"{fleet.partition_set}-{n}.json"
        data = orjson.loads(path.read_bytes()) if path.exists() else {"devices": []}
        # A device: [tenant, type, id, newest, interval, readings, {rule: [..., episode, ...]}]
        count += sum(1 for device in data["devices"] if (device[6].get("fever") or [None] * 7)[6])
    return count


def test_a_worker_killed_mid_run_its_partitions_are_taken_over_with_their_alert_state(
    fleet: Fleet,
) -> None:
    fleet.add_devices(12)
    watch = AlertWatch(fleet.engine, fleet.tenant)
    try:
        for index in range(3):
            fleet.start_worker(index, 3)
        # Balanced: worker 0 (shares 0 and 3) stepped back from 1 and 2, and worker 1 from 2.
        wait_until(
            lambda: (
                "partition 1 for worker 1" in fleet.log_text(0)
                and "partition 2 for worker 2" in fleet.log_text(0)
                and "partition 2 for worker 2" in fleet.log_text(1)
            ),
            timeout_s=20,
            what="the workers to balance",
        )
        fleet.publish(BEFORE_KILL, FAILOVER_TEMPERATURES)
        wait_until(
            lambda: len(watch.raised_ids()) == len(fleet.devices),
            timeout_s=30,
            what="every device's fever raised",
        )
        victim = fleet.taken_over(0)
        assert victim and set(victim) <= {0, 3}, victim  # its share
        # The snapshots hold every device's open episode (written every 0.5 s here). Not only
        # some: a device whose raise is announced but not in a snapshot yet may lose, with the
        # kill, the count of hot readings before it (acknowledged, so not delivered again),
        # and its next hot readings raise the fever anew (seen: one device in one run).
        wait_until(
            lambda: open_fevers(fleet) == len(fleet.devices),
            timeout_s=10,
            what="every device's open fever in the partitions' snapshots",
        )
        fleet.workers[0].kill()  # SIGKILL: nothing stored or acknowledged after this
        killed = time.monotonic()
        fleet.workers[0].wait(10)
        fleet.publish(AFTER_KILL, FAILOVER_TEMPERATURES)

        def new_owners() -> dict[int, int]:
            return {n: w for w in (1, 2) for n in fleet.taken_over(w) if n in victim}

        wait_until(
            lambda: len(new_owners()) == len(victim),
            timeout_s=max(0.1, 10 - (time.monotonic() - killed)),
            what="the killed worker's partitions taken over within 10 s of the kill",
        )
        sent = len(fleet.devices) * len(FAILOVER_TEMPERATURES)
        wait_until(lambda: fleet.stored() == sent, timeout_s=60, what="every reading stored")
        wait_until(
            lambda: len(watch.resolved()) == len(fleet.devices),
            timeout_s=30,
            what="every fever resolved",
        )
    finally:
        watch.peer.close()
    assert fleet.stored() == sent
    # No fever raised twice (the hot readings after the kill kept the episode open), and
    # none forgotten: each episode resolved under the id it was raised with.
    raised = watch.raised_ids()
    assert {device: len(ids) for device, ids in raised.items()} == {
        f"cow-{n}": 1 for n in range(len(fleet.devices))
    }, raised
    resolved = {str(c["id"]): c for c in watch.changes() if c["state"] == "resolved"}
    assert set(resolved) == {i for ids in raised.values() for i in ids}, [
        c for i, c in resolved.items() if not any(i in ids for ids in raised.values())
    ]
    # Restored from the snapshots: the new owners said how many devices each held.
    restored = [
        line
        for w in (1, 2)
        for line in fleet.log_text(w).splitlines()
        if "taken over" in line and int(line.split("partition ")[1].split()[0]) in victim
    ]
    assert len(restored) == len(victim), restored
    assert all(" 0 devices" not in line for line in restored), restored


def test_a_device_login_cannot_consume_the_partitions_where_an_ingest_login_can(
    engine: Engine,
) -> None:
    """The partitions hold every tenant's readings: only ingest's logins may speak AMQP."""
    tenant = f"farm-{uuid.uuid4().hex[:8]}"
    device = engine.registry.add_device(tenant, COW, "cow-0")
    ingest = engine.registry.add_account("ingest", f"ingest-{uuid.uuid4().hex[:8]}")
    plan = PartitionPlan(
        partitions=2, worker=0, workers=1, bindings=(f"moclo.{tenant}.*.*.telemetry",),
        name=f"t{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    port = engine.cluster.nodes[1].ports.amqp

    def connect(login: Credentials) -> pika.BlockingConnection:
        credentials = pika.PlainCredentials(login.username, login.password)
        return pika.BlockingConnection(
            pika.ConnectionParameters("127.0.0.1", port, "/", credentials)
        )

    # Positive control: ingest's login declares the partitions and consumes one.
    with connect(ingest) as connection:
        channel = connection.channel()
        declare_partitions(channel, plan)
        assert channel.basic_consume(plan.queue(0), lambda *_: None)
    # The device's own, valid login is refused before it can open a channel.
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        connect(device)


def test_an_open_alert_whose_rule_is_gone_is_resolved_by_the_worker_taking_it_over(
    fleet: Fleet,
) -> None:
    """As ingest on Mosquitto does at start: otherwise it would stay open for ever."""
    fleet.add_devices(1)
    t0 = (int(time.time()) - 7200) * 10**9
    retired = Alert(
        *("0123456789ab", "raised", "retired_rule", "threshold", "warning"),
        *(fleet.tenant, COW, "cow-0", 1.0, "a rule since removed", t0, t0, t0),
    )
    fleet.influx.write([retired.to_line()])
    watch = AlertWatch(fleet.engine, fleet.tenant)
    try:
        fleet.start_worker(0, 1)
        fleet.publish(range(1), TEMPERATURES)
        wait_until(
            lambda: (
                [(c["id"], c["state"]) for c in watch.changes()] == [("0123456789ab", "resolved")]
            ),
            timeout_s=30,
            what="the retired rule's alert resolved and announced",
        )
    finally:
        watch.peer.close()
    stored = fleet.influx.query(
        f'SELECT last("state") FROM "moclo_alerts" WHERE "tenant" = \'{fleet.tenant}\''
    )
    assert stored[0]["last"] == "resolved", stored
