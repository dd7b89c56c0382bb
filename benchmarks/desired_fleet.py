"""A desired-state change to a whole fleet at once, THROUGH moclo's gateway, beside the same
change with the benchmark playing the gateway (issue 16: "10,000 simulated devices receiving a
desired-state change at once: all applied, time to the last one, no broker queue overflow").

    .venv/bin/python -m benchmarks.desired_fleet [--devices 10000] [--short]

1. Device-only (as benchmarks/downlink_devices.py): one Mosquitto, `--devices` obeying
   thermostats (one connection each); this process sends every device its desired document and
   times until the last `reported` arrived.
2. Through ingest: a Mosquitto (open) and InfluxDB of their own, a registry with the same
   thermostats of one tenant and one operator account, a real `moclo ingest` process, the same
   obeying thermostats; the operator publishes one request per device on
   `{p}/{t}/desired-requests/{account}` (QoS 1, as fast as the broker takes them) and the time
   is until every `{device}-desired-1` was announced `succeeded` on `{p}/{t}/command-status/+`
   (ingest recorded it, sent it, the device applied and reported it, ingest confirmed it).
   Also counted: devices whose next reading shows the new setpoint, and the broker's
   `$SYS/broker/publish/messages/dropped` before and after (it must not grow).
The ratio through-ingest / device-only is what moclo's gateway costs on top of devices + broker.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho

from access.registry import DeviceSpec, Registry
from benchmarks.alerts_stack import BenchmarkFailed
from benchmarks.downlink_devices import PREFIX, TENANT, Gateway
from benchmarks.machine import machine
from core.mqtt import MqttEndpoint, make_client
from devices.topics import (
    DESIRED_REQUESTS,
    command_status_subscription,
    request_topic,
    telemetry_topic,
)
from moclo.stack import InfluxServer, MosquittoServer, free_port
from simulators.run import SimulationOptions, run_simulation

ACCOUNT = "olga"
SETPOINT = 19.0
SHORT_DEVICES = 200
DROPPED = "$SYS/broker/publish/messages/dropped"


@dataclass
class Figures:
    devices: int
    applied: int  # devices whose desired change was confirmed (succeeded / reported)
    last_s: float  # from the first request to the last confirmation
    shown: int = 0  # devices whose reading shows the new setpoint (through ingest only)
    dropped_before: int | None = None
    dropped_after: int | None = None


def ids(devices: int) -> list[str]:
    return [f"thermostat-{n:04d}" for n in range(1, devices + 1)]


@contextmanager
def fleet(endpoint: MqttEndpoint, devices: int, interval_s: float = 10.0) -> Iterator[None]:
    """`devices` obeying thermostats, one connection each, reporting every `interval_s`."""
    stop = threading.Event()
    options = SimulationOptions(
        devices={"thermostat": devices},
        tenant=TENANT,
        interval_s=interval_s,
        duration_s=None,
        per_device_connections=True,
        obey=True,
    )
    simulation = threading.Thread(
        target=run_simulation, args=(endpoint, PREFIX, options), kwargs={"stop": stop}
    )
    simulation.start()
    try:
        yield
    finally:
        stop.set()
        simulation.join(300)


def device_only(broker: MosquittoServer, devices: int) -> Figures:
    """The benchmark as gateway: every device sent its desired document at once."""
    endpoint = MqttEndpoint.from_url(broker.url)
    gateway = Gateway(endpoint)
    everyone = ids(devices)
    try:
        with fleet(endpoint, devices):
            if not gateway.wait(lambda: len(gateway.asked) == devices, 300):
                raise BenchmarkFailed("device-only: the devices did not all come up")
            sent = time.perf_counter()
            for device in everyone:
                document = {"version": 1, "state": {"setpoint_c": SETPOINT}, "ts": 1e9}
                gateway.send(device, "desired", document)
            gateway.wait(lambda: all(d in gateway.arrived for d in everyone), 900)
            applied = sum(d in gateway.arrived for d in everyone)
            last = max(gateway.arrived.get(d, sent) for d in everyone)
    finally:
        gateway.close()
    return Figures(devices, applied, last - sent)


class Watcher:
    """The people's side: command-status announcements, readings, devices asking, $SYS."""

    def __init__(self, endpoint: MqttEndpoint) -> None:
        self.succeeded: dict[str, float] = {}  # desired id → when `succeeded` arrived
        self.setpoint: dict[str, float] = {}  # device → setpoint of its latest reading
        self.asked: set[str] = set()
        self.dropped: list[int] = []
        self.changed = threading.Condition()
        self._client = make_client(endpoint, f"bench-watch-{uuid.uuid4().hex[:6]}")
        self._client.max_inflight_messages_set(1000)
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *a: subscribed.set()
        self._client.connect(endpoint.host, endpoint.port)
        self._client.loop_start()
        self._client.subscribe(
            [
                (command_status_subscription(PREFIX), 1),
                # QoS 1: a QoS 0 message to a busy subscriber may be dropped, and counted.
                (telemetry_topic(PREFIX, TENANT, "thermostat", "+"), 1),
                (f"{PREFIX}/{TENANT}/+/+/commands/get", 1),
                (DROPPED, 1),
            ]
        )
        if not subscribed.wait(10):
            raise BenchmarkFailed("the watcher did not subscribe")

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        now = time.perf_counter()
        topic = message.topic
        with self.changed:
            if topic == DROPPED:
                self.dropped.append(int(message.payload))
            elif topic.endswith("/commands/get"):
                self.asked.add(topic.split("/")[3])
            elif "/command-status/" in topic:
                update = orjson.loads(message.payload)
                if update.get("status") == "succeeded" and update["id"].endswith("-desired-1"):
                    self.succeeded.setdefault(update["id"], now)
            else:
                reading = orjson.loads(message.payload)
                if isinstance(reading, dict) and "setpoint_c" in reading:
                    self.setpoint[topic.split("/")[3]] = reading["setpoint_c"]
            self.changed.notify_all()

    def wait(self, probe: Any, timeout_s: float) -> bool:
        with self.changed:
            return self.changed.wait_for(probe, timeout_s)

    def next_dropped(self, timeout_s: float = 25.0) -> int | None:
        """The broker's dropped count from its next $SYS update, or the last one seen if none
        comes within `timeout_s`: Mosquitto publishes a $SYS counter every `sys_interval`
        (10 s by default) only when it changed, so silence over 2.5 intervals means no drop."""
        seen = len(self.dropped)
        if self.wait(lambda: len(self.dropped) > seen, timeout_s):
            return self.dropped[-1]
        return self.dropped[-1] if self.dropped else None

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@contextmanager
def ingest_process(workdir: Path, mqtt_url: str, influx_url: str) -> Iterator[None]:
    """A real `moclo ingest`, a process of its own, until the block ends."""
    port = free_port()
    env = {
        **os.environ,
        "MOCLO_MQTT_URL": mqtt_url,
        "MOCLO_INFLUX_URL": influx_url,
        "MOCLO_INFLUX_DB": "desired_fleet",
        "MOCLO_TOPIC_PREFIX": PREFIX,
        "MOCLO_INGEST_CLIENT_ID": "ingest-desired-fleet",
        "MOCLO_SPOOL_DIR": str(workdir / "spool"),
        "MOCLO_HTTP_LISTEN": f"127.0.0.1:{port}",
        "MOCLO_REGISTRY": str(workdir / "registry.sqlite"),
    }
    log_path = workdir / "ingest.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moclo.cli", "ingest"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise BenchmarkFailed(f"ingest did not start:\n{tail}") from None
                time.sleep(0.2)  # polling a process that is starting, with a deadline
        yield
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def through_ingest(
    workdir: Path, devices: int, interval_s: float = 10.0, sys_interval_s: int = 10
) -> Figures:
    broker = MosquittoServer(workdir / "mosquitto", free_port(), sys_interval_s=sys_interval_s)
    database = InfluxServer(workdir / "influxdb", free_port())
    broker.start()
    try:
        database.start()
        try:
            return _through_ingest(workdir, broker, database, devices, interval_s, sys_interval_s)
        finally:
            database.stop()
    finally:
        broker.stop()


def _through_ingest(
    workdir: Path,
    broker: MosquittoServer,
    database: InfluxServer,
    devices: int,
    interval_s: float = 10.0,
    sys_interval_s: int = 10,
) -> Figures:
    registry = Registry(workdir / "registry.sqlite")
    everyone = ids(devices)
    registry.add_devices([DeviceSpec(TENANT, "thermostat", d) for d in everyone])
    registry.add_account("operator", ACCOUNT, tenant=TENANT)
    endpoint = MqttEndpoint.from_url(broker.url)
    watcher = Watcher(endpoint)
    # Before the fleet: paho's loop uses select(), which takes no descriptor above 1023.
    operator = make_client(endpoint, f"olga-{uuid.uuid4().hex[:6]}")
    operator.max_inflight_messages_set(1000)
    connected = threading.Event()
    operator.on_connect = lambda *a: connected.set()
    operator.connect(endpoint.host, endpoint.port)
    operator.loop_start()
    if not connected.wait(30):
        raise BenchmarkFailed("the operator did not connect")
    with ingest_process(workdir, broker.url, database.url), fleet(endpoint, devices, interval_s):
        if not watcher.wait(lambda: len(watcher.asked) >= devices, 300):
            up = len(watcher.asked)
            raise BenchmarkFailed(f"through ingest: {up} of {devices} devices came up")
        # The broker's $SYS counters are retained: the one seen on subscribing is current.
        silence_s = 2.5 * sys_interval_s
        before = watcher.dropped[-1] if watcher.dropped else watcher.next_dropped(silence_s)
        topic = request_topic(PREFIX, TENANT, DESIRED_REQUESTS, ACCOUNT)
        sent = time.perf_counter()
        for device in everyone:
            body = {"device": device, "state": {"setpoint_c": SETPOINT}}
            info = operator.publish(topic, orjson.dumps(body), qos=1)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise BenchmarkFailed(f"publishing a request: {paho.error_string(info.rc)}")
        wanted = {f"{d}-desired-1" for d in everyone}
        deadline = sent + 900
        while not watcher.wait(lambda: wanted <= watcher.succeeded.keys(), 10):
            print(f"  {len(watcher.succeeded)} of {devices} succeeded so far", flush=True)
            if time.perf_counter() > deadline:
                break
        applied = len(wanted & watcher.succeeded.keys())
        last = max(watcher.succeeded.get(i, sent) for i in wanted)
        # Two reading periods and a half for every device's next one.
        watcher.wait(
            lambda: all(watcher.setpoint.get(d) == SETPOINT for d in everyone), 2.5 * interval_s
        )
        shown = sum(watcher.setpoint.get(d) == SETPOINT for d in everyone)
        after = watcher.next_dropped(silence_s)
        operator.disconnect()
        operator.loop_stop()
    watcher.close()
    return Figures(devices, applied, last - sent, shown, before, after)


def run(
    devices: int, workdir: Path, *, interval_s: float = 10.0, sys_interval_s: int = 10
) -> tuple[Figures, Figures]:
    """Both paths for `devices` thermostats reporting every `interval_s` (the test: 1 s), the
    broker publishing its $SYS counters every `sys_interval_s` (the test: 1 s)."""
    broker = MosquittoServer(workdir / "baseline", free_port())
    broker.start()
    try:
        baseline = device_only(broker, devices)
    finally:
        broker.stop()
    (workdir / "ingest").mkdir()
    return baseline, through_ingest(workdir / "ingest", devices, interval_s, sys_interval_s)


def report(baseline: Figures, gateway: Figures) -> str:
    ratio = gateway.last_s / baseline.last_s if baseline.last_s > 0 else float("nan")
    return "\n".join(
        [
            f"device-only (benchmark as gateway): {baseline.applied} of {baseline.devices} "
            f"reported, the last after {baseline.last_s:.2f}s",
            f"through ingest: {gateway.applied} of {gateway.devices} succeeded, the last after "
            f"{gateway.last_s:.2f}s; {gateway.shown} readings show setpoint {SETPOINT}; broker "
            f"dropped {gateway.dropped_before} before, {gateway.dropped_after} after",
            f"ratio through-ingest / device-only: {ratio:.2f}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.desired_fleet", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--short", action="store_true", help=f"{SHORT_DEVICES} devices (a test)")
    args = parser.parse_args(argv)
    devices = SHORT_DEVICES if args.short else args.devices
    print(machine())
    with tempfile.TemporaryDirectory(prefix="moclo-desired-") as workdir:
        baseline, gateway = run(devices, Path(workdir))
    print(report(baseline, gateway))
    ok = baseline.applied == gateway.applied == gateway.shown == devices
    ok = ok and gateway.dropped_before == gateway.dropped_after
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
