"""The engine's side of `python -m benchmarks.scale`: devices publishing over MQTT 3.1.1 at the
three RabbitMQ nodes, `moclo ingest` workers draining the partitions, and kill -9 failovers.

Workers are `moclo ingest` processes configured only by MOCLO_* variables, as a deployment
runs them (docs/scale.md), each with an ingest login of its own, at node I % 3 (its own node
first in MOCLO_ENGINE_URL). Every round has its own database and spool; the partitions are the
default set ("telemetry"), bound to the benchmark's tenant only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from access.registry import Credentials, DeviceSpec, Registry
from benchmarks.alerts_stack import BenchmarkFailed
from benchmarks.ingest_procfs import cpu_seconds
from moclo.cluster import RabbitCluster

PARTITIONS = 4
POLL_S = 0.02  # how often a drain or a failover looks at InfluxDB: the timer's resolution
PREFIX = "moclo"  # the engine auth's topic prefix
Messages = list[tuple[str, bytes]]  # (topic without the prefix, payload)


@dataclass
class EngineRig:
    """The cluster, its registry, InfluxDB, and one login per device of the readings."""

    cluster: RabbitCluster
    registry: Registry
    influx_url: str
    workdir: Path
    tenant: str
    devices: dict[str, Credentials]  # topic without the prefix → its device's login

    @classmethod
    def register(
        cls, cluster: RabbitCluster, registry: Registry, influx_url: str, workdir: Path, m: Messages
    ) -> EngineRig:
        topics = sorted({topic for topic, _ in m})
        specs = [DeviceSpec(*topic.split("/")[:3]) for topic in topics]
        added = registry.add_devices(specs, skip_registered=True)
        if len(added) != len(specs):
            raise BenchmarkFailed("the benchmark's devices were registered before: a new registry")
        return cls(
            cluster,
            registry,
            influx_url,
            workdir,
            specs[0].tenant,
            {t: c for t, (_, c) in zip(topics, added, strict=True)},
        )

    def node_cpu(self) -> float:
        """CPU seconds of the three nodes (each node's pid is its Erlang VM's)."""
        return sum(cpu_seconds(n.pid) for n in self.cluster.nodes if n.pid is not None)


class Device:
    """One device's MQTT 3.1.1 connection to a node, publishing QoS 1 with up to 100 in flight."""

    def __init__(self, rig: EngineRig, topic: str, node: int) -> None:
        login = rig.devices[topic]
        self.connected = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=login.username,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        self.client.username_pw_set(login.username, login.password)
        self.client.max_inflight_messages_set(100)
        self.client.on_connect = self._on_connect
        self.client.connect("127.0.0.1", rig.cluster.nodes[node].ports.mqtt)
        self.client.loop_start()
        if not self.connected.wait(30):  # the auth service answers every login: busy, slow
            self.close()
            raise BenchmarkFailed(f"{login.username}: no CONNACK at r{node + 1} in 30 s")

    def _on_connect(self, c: object, u: object, f: object, reason: object, p: object) -> None:
        if reason == 0:
            self.connected.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(rig: EngineRig, topics: list[str]) -> dict[str, Device]:
    """A connection for each device of `topics`, device n at node n % 3."""
    devices: dict[str, Device] = {}
    try:
        for n, topic in enumerate(sorted(topics)):
            devices[topic] = Device(rig, topic, n % 3)
    except BaseException:
        disconnect(devices)
        raise
    return devices


def disconnect(devices: dict[str, Device]) -> None:
    for device in devices.values():
        device.close()


def send(devices: dict[str, Device], messages: Messages) -> None:
    """Every device's messages at once (paho's thread each, up to 100 in flight); returns when
    every reading has its PUBACK, which the engine sends after a majority of nodes stored it."""
    by_topic: dict[str, list[bytes]] = {}
    for topic, payload in messages:
        by_topic.setdefault(topic, []).append(payload)
    sent = [
        (topic, devices[topic].client.publish(f"{PREFIX}/{topic}", p, qos=1))
        for topic, payloads in by_topic.items()
        for p in payloads
    ]
    for topic, info in sent:
        info.wait_for_publish(60)
        if not info.is_published():
            raise BenchmarkFailed(f"{topic}: no PUBACK within 60 s")


def publish_backlog(rig: EngineRig, messages: Messages) -> None:
    """`send` from devices connected for it, then disconnected."""
    devices = connect(rig, list({topic for topic, _ in messages}))
    try:
        send(devices, messages)
    finally:
        disconnect(devices)


class Worker:
    """`moclo ingest` on the engine: worker `index` of `of`, logging to its own file."""

    def __init__(self, rig: EngineRig, database: str, index: int, of: int, name: str) -> None:
        login = rig.registry.add_account("ingest", f"ingest-{name}-{index}")
        nodes = rig.cluster.nodes
        first = index % len(nodes)
        ordered = nodes[first:] + nodes[:first]
        workdir = rig.workdir / name
        workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOCLO_")} | {
            "MOCLO_MQTT_URL": nodes[first].mqtt_url,
            "MOCLO_MQTT_USERNAME": login.username,
            "MOCLO_MQTT_PASSWORD": login.password,
            "MOCLO_ENGINE_URL": "amqp://" + ",".join(f"127.0.0.1:{n.ports.amqp}" for n in ordered),
            "MOCLO_ENGINE_WORKER": f"{index}/{of}",
            "MOCLO_ENGINE_PARTITIONS": str(PARTITIONS),
            "MOCLO_INGEST_TENANTS": rig.tenant,
            "MOCLO_INFLUX_URL": rig.influx_url,
            "MOCLO_INFLUX_DB": database,
            "MOCLO_TOPIC_PREFIX": PREFIX,
            "MOCLO_SPOOL_DIR": str(workdir / "spool"),  # shared by the round's workers
            "MOCLO_HTTP_LISTEN": "off",
            "MOCLO_UNREGISTERED": "off",
            "MOCLO_REGISTRY": str(workdir / "unused-registry.sqlite"),
        }
        self.log = workdir / f"worker-{index}.log"
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "moclo"), "ingest"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def consuming(self) -> int:
        """How many times it started consuming (once per connection to the engine)."""
        return self.text().count("consuming partitions")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def until(condition: Callable[[], bool], workers: list[Worker], what: str, limit_s: float) -> None:
    """Polls `condition` until true; BenchmarkFailed at the deadline or if a worker died."""
    deadline = time.monotonic() + limit_s
    while not condition():
        dead = next((w for w in workers if not w.alive()), None)
        if dead is not None:
            tail = "\n".join(dead.text().splitlines()[-15:])
            raise BenchmarkFailed(f"{what}: a worker exited; {dead.log}:\n{tail}")
        if time.monotonic() > deadline:
            raise BenchmarkFailed(f"{what}: not within {limit_s:.0f} s")
        time.sleep(POLL_S)  # polling a condition; the deadline bounds it


def stored(http: httpx.Client, database: str, tenant: str) -> int:
    """Readings of the tenant stored (their seq fields counted)."""
    query = f'SELECT count("seq") FROM "cow_tracker" WHERE "tenant" = \'{tenant}\''
    answer = http.get("/query", params={"db": database, "q": query}).json()
    series = answer["results"][0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


def create_database(http: httpx.Client, database: str) -> None:
    http.post("/query", params={"q": f'CREATE DATABASE "{database}"'}).raise_for_status()


def next_readings(messages: Messages, step: int) -> Messages:
    """Each device's last reading again, `step` minutes later (a new point, a new seq)."""
    last = {topic: payload for topic, payload in messages}
    out = []
    for topic, payload in sorted(last.items()):
        reading = orjson.loads(payload)
        reading["ts"] += 60 * step
        reading["seq"] += step
        out.append((topic, orjson.dumps(reading)))
    return out
