"""The device side of the downlink: how fast simulated devices answer, with the broker between.

    .venv/bin/python -m benchmarks.downlink_devices [--devices 10000] [--commands 1000]

One Mosquitto started here; `--devices` thermostats that obey, one connection each (as real
devices), reporting every 10 s in the background. This process plays moclo's gateway:
1. command → device → result, one command at a time to devices in turn: p50/p99/max;
2. a desired-state change to every device at once (a tenant-wide schedule): the time until
   the last `reported` arrived, and whether every device applied it;
3. with `--away SECONDS`: every device offline that long (disconnected; its persistent session
   kept by the broker), sent meanwhile one command that expires before it is back and two that
   do not: on its return, are the two done exactly once and the first answered `expired`?
It measures the devices and the broker, not ingest: the gateway's own figures are its own.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho

from core.mqtt import MqttEndpoint, make_client
from devices.topics import device_topic
from moclo.stack import MosquittoServer, free_port
from simulators.run import ScriptedEvent, SimulationOptions, SimulationResult, run_simulation

PREFIX = "bench"
TENANT = "home"


class Gateway:
    def __init__(self, endpoint: MqttEndpoint) -> None:
        self.arrived: dict[str, float] = {}  # command id or device id → when its answer came
        self.statuses: dict[str, list[str]] = {}  # command id → every answer's status
        self.asked: set[str] = set()  # devices that asked for their commands (subscribed)
        self.done = threading.Condition()
        self._client = make_client(endpoint, f"bench-gateway-{uuid.uuid4().hex[:6]}", nodelay=True)
        self._client.max_inflight_messages_set(1000)
        self._client.on_message = self._on_message
        # As moclo's own connections: no Nagle delay between a PUBACK and the next command.
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *a: subscribed.set()
        self._client.connect(endpoint.host, endpoint.port)
        self._client.loop_start()
        levels = ("command-results", "reported", "commands/get")
        self._client.subscribe([(f"{PREFIX}/{TENANT}/+/+/{level}", 1) for level in levels])
        assert subscribed.wait(10)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        device, level = message.topic.split("/", 4)[3:5]
        now = time.perf_counter()
        with self.done:
            if level == "commands/get":
                self.asked.add(device)
            elif level == "reported":
                self.arrived[device] = now
            else:
                answer = orjson.loads(message.payload)
                self.arrived[answer["id"]] = now
                self.statuses.setdefault(answer["id"], []).append(answer["status"])
            self.done.notify_all()

    def wait(self, probe: Any, timeout_s: float) -> bool:
        with self.done:
            return self.done.wait_for(probe, timeout_s)

    def send(self, device: str, level: str, payload: dict[str, Any]) -> None:
        topic = device_topic(PREFIX, TENANT, "thermostat", device, level)
        self._client.publish(topic, orjson.dumps(payload), qos=1)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def measure(endpoint: MqttEndpoint, devices: int, commands: int) -> None:
    stop = threading.Event()
    options = SimulationOptions(
        devices={"thermostat": devices},
        tenant=TENANT,
        interval_s=10.0,
        duration_s=None,
        per_device_connections=True,
        obey=True,
    )
    gateway = Gateway(endpoint)
    began = time.perf_counter()
    simulation = threading.Thread(
        target=run_simulation, args=(endpoint, PREFIX, options), kwargs={"stop": stop}
    )
    simulation.start()
    ids = [f"thermostat-{n:04d}" for n in range(1, devices + 1)]
    assert gateway.wait(lambda: len(gateway.asked) == devices, 600), "devices not all up"
    print(f"{devices} devices connected and subscribed in {time.perf_counter() - began:.1f}s")
    latencies = []
    for k in range(commands):
        command_id = uuid.uuid4().hex
        now = time.time()
        args = {"setpoint_c": 18.0 + k % 5}
        command = {"id": command_id, "name": "set_setpoint", "args": args, "issuer": "bench"}
        sent = time.perf_counter()
        gateway.send(ids[k % devices], "commands", {**command, "created": now, "expires": now + 60})
        assert gateway.wait(lambda i=command_id: i in gateway.arrived, 10), "no answer"
        latencies.append((gateway.arrived[command_id] - sent) * 1000)
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"command → device → result, {commands} one at a time: p50 {cuts[49]:.1f} ms, "
        f"p99 {cuts[98]:.1f} ms, max {max(latencies):.1f} ms"
    )
    sent = time.perf_counter()
    for device in ids:
        gateway.send(device, "desired", {"version": 1, "state": {"setpoint_c": 21.5}, "ts": 1e9})
    applied = gateway.wait(lambda: all(d in gateway.arrived for d in ids), 600)
    last = max(gateway.arrived.get(d, sent) for d in ids)
    reported = sum(d in gateway.arrived for d in ids)
    print(
        f"desired state to all {devices} at once: {reported} reported "
        f"({'all' if applied else 'NOT all'}), the last after {last - sent:.2f}s"
    )
    stop.set()
    simulation.join(120)
    gateway.close()


def away(broker: MosquittoServer, devices: int, away_s: float) -> None:
    endpoint = MqttEndpoint.from_url(broker.url)
    ids = [f"thermostat-{n:04d}" for n in range(1, devices + 1)]
    options = SimulationOptions(
        devices={"thermostat": devices},
        tenant=TENANT,
        interval_s=1.0,
        duration_s=None,
        per_device_connections=True,
        obey=True,
        events=tuple(ScriptedEvent(TENANT, d, "offline", "+5s", away_s) for d in ids),
    )
    gateway = Gateway(endpoint)
    stop = threading.Event()
    done: list[SimulationResult] = []
    offset = broker.log_path.stat().st_size
    simulation = threading.Thread(
        target=lambda: done.append(run_simulation(endpoint, PREFIX, options, stop=stop))
    )
    simulation.start()

    def gone() -> int:
        with broker.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().count(b"disconnected.")

    assert gateway.wait(lambda: len(gateway.asked) == devices, 600), "devices not all up"
    deadline = time.perf_counter() + 600
    while gone() < devices:  # a benchmark's poll of the broker's log, with a deadline
        assert time.perf_counter() < deadline, "devices did not go offline"
        time.sleep(0.2)
    now = time.time()
    lapsing, lasting = [], []
    for k, device in enumerate(ids):
        # One lapses halfway through the outage; two outlast it.
        for expires_in, kept in ((away_s / 2, lapsing), (3600.0, lasting), (3600.0, lasting)):
            command_id = f"c{k}-{len(kept)}-{expires_in:.0f}"
            kept.append(command_id)
            args = {"setpoint_c": 20.0}
            gateway.send(
                device,
                "commands",
                {"id": command_id, "name": "set_setpoint", "args": args, "issuer": "bench",
                 "created": now, "expires": now + expires_in},
            )  # fmt: skip
    sent = time.perf_counter()
    every = lapsing + lasting
    answered = gateway.wait(lambda: all(i in gateway.statuses for i in every), away_s + 600)
    last = max(gateway.arrived.get(i, sent) for i in every)
    stop.set()
    simulation.join(120)
    expired = sum(gateway.statuses.get(i, []) == ["expired"] for i in lapsing)
    succeeded = sum(gateway.statuses.get(i, []) == ["succeeded"] for i in lasting)
    commands = done[0].commands if done else {}
    print(
        f"{devices} devices away {away_s:.0f}s, 3 commands each sent meanwhile: "
        f"{'all' if answered else 'NOT all'} answered, the last {last - sent:.1f}s after sending; "
        f"{succeeded} of {len(lasting)} unexpired succeeded with one answer each, {expired} of "
        f"{len(lapsing)} lapsed answered expired; the devices executed "
        f"{commands.get('executed', 0)} (expected {len(lasting)})"
    )
    gateway.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--commands", type=int, default=1_000)
    parser.add_argument("--away", type=float, default=None, metavar="SECONDS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoServer(Path(tmp) / "mosquitto", free_port())
        broker.start()
        try:
            if args.away:
                away(broker, args.devices, args.away)
            else:
                measure(MqttEndpoint.from_url(broker.url), args.devices, args.commands)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
