"""Issue 19, "What must hold" 4: kill -9 one RabbitMQ node mid-run (two of three keep quorum).

Nothing a device was told is stored (a PUBACK) may be lost; the devices that were at the killed
node reconnect to another one; the ingest workers carry on (a worker whose AMQP node died goes
on at the next node of its `MOCLO_ENGINE_URL`). Devices here know every node, as a device
fleet behind a list of broker addresses does: a publish that gets no PUBACK is sent again at
the next node (the same reading, so stored once: a point's identity is its timestamp).

The node is started again afterwards, so the session's cluster is whole for the tests after.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from access.registry import Credentials
from devices.topics import telemetry_topic
from moclo.stack import InfluxServer
from tests.conftest import Engine
from tests.helpers import cow_json, wait_until
from tests.test_broker_access import Peer
from tests.test_engine_cluster import V311
from tests.test_engine_ingest import COW, NORMAL, Fleet

KILLED = 1  # r2: one device in three is at it, and worker 0's AMQP connection
ROUNDS, KILL_AFTER = 8, 3


class RoamingDevice:
    """A device that knows every node: it publishes at one and, when that one stops answering,
    at the next, sending again the reading that got no PUBACK."""

    def __init__(self, engine: Engine, credentials: Credentials, first: int) -> None:
        self.engine = engine
        self.credentials = credentials
        self.node = first
        self.peer: Peer | None = None
        self.nodes_used: list[int] = []
        self.acknowledged = 0  # readings this device got a PUBACK for

    def _connect(self) -> Peer | None:
        port = self.engine.cluster.nodes[self.node].ports.mqtt
        try:
            peer = Peer(
                port,
                self.credentials.username,
                (self.credentials.username, self.credentials.password),
                protocol=V311,
                client_id=self.credentials.username,
            )
        except (OSError, AssertionError):  # refused, or no CONNACK: that node is down
            return None
        if not peer.logged_in:
            return None
        self.nodes_used.append(self.node)
        return peer

    def publish(self, topic: str, payload: bytes, *, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.peer is None:
                self.peer = self._connect()
            if self.peer is not None:
                try:
                    code = self.peer.publish(topic, payload)
                except AssertionError:  # no PUBACK within 10 s: the node hangs
                    code = None
                if code == 0:
                    self.acknowledged += 1
                    return
                self.peer.close()
                self.peer = None
            self.node = (self.node + 1) % len(self.engine.cluster.nodes)  # the next node
        raise AssertionError(f"{self.credentials.username}: no node took {topic} in {timeout_s} s")

    def close(self) -> None:
        if self.peer is not None:
            self.peer.close()


@pytest.fixture
def workers(engine: Engine, influxdb: InfluxServer, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(engine, influxdb, tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop()


def publish_rounds(
    fleet: Fleet, devices: list[RoamingDevice], after: Callable[[int], None]
) -> None:
    t0 = int(time.time()) - 3600
    for i in range(ROUNDS):
        for n, device in enumerate(devices):
            topic = telemetry_topic(fleet.engine.prefix, fleet.tenant, COW, f"cow-{n}")
            device.publish(topic, cow_json(t0 + 60 * i, i + 1, body_temp_c=NORMAL))
        after(i)


def test_a_node_killed_mid_run_loses_nothing_acknowledged_and_devices_and_workers_go_on(
    workers: Fleet,
) -> None:
    fleet = workers
    cluster = fleet.engine.cluster
    fleet.add_devices(12)
    devices = [RoamingDevice(fleet.engine, c, n % 3) for n, c in enumerate(fleet.devices)]
    killed_at: list[float] = []

    def kill_mid_run(round_done: int) -> None:
        if round_done == KILL_AFTER - 1:
            cluster.nodes[KILLED].kill()  # SIGKILL
            killed_at.append(time.monotonic())

    try:
        fleet.start_worker(0, 2)  # AMQP and MQTT at r2, the node killed
        fleet.start_worker(1, 2)  # at r3
        publish_rounds(fleet, devices, kill_mid_run)
        assert killed_at and not cluster.nodes[KILLED].running()
        sent = len(devices) * ROUNDS
        acknowledged = sum(d.acknowledged for d in devices)
        assert acknowledged == sent  # each device went on until every reading got its PUBACK
        wait_until(lambda: fleet.stored() == sent, timeout_s=60, what="every reading stored")
        # The devices that were at r2 went on at another node; the others stayed where they were.
        roamed = [d for d in devices if KILLED in d.nodes_used]
        assert len(roamed) == len(devices) // 3
        assert all(d.nodes_used[-1] != KILLED for d in roamed), [d.nodes_used for d in roamed]
        assert all(d.nodes_used == [d.nodes_used[0]] for d in devices if d not in roamed)
        # Both workers carry on: worker 0 lost its node and consumes again at another.
        assert fleet.running(0) and fleet.running(1)
        assert "engine connection lost" in fleet.log_text(0)
        wait_until(
            lambda: fleet.log_text(0).count("consuming partitions") == 2,
            timeout_s=30,
            what="worker 0 consuming again at another node",
        )
    finally:
        for device in devices:
            device.close()
        if not cluster.nodes[KILLED].running():
            cluster.restart(KILLED)
        cluster.wait_running(3, timeout_s=60)
    assert fleet.stored() == sent  # nothing more came, nothing was written twice as two points
