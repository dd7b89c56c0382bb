"""Command round trip: request → ingest's checks and record → device → answer → `succeeded`
announced, with readings flowing beside it (issue 16's target: p99 < 250 ms at 1,000/s).

A real Mosquitto and InfluxDB on free loopback ports, a real ingest (in this process, on a
thread of its own), one device (a paho client on MQTT 3.1.1 with a persistent session that
answers `succeeded` at once), a client that asks for one command at a time as an operator and
waits for its `succeeded` on command-status, and a publisher sending cow readings at `--rate`.
Each command's time is from publishing the request to receiving the announcement, so it holds
two passes through ingest (the request, then the device's answer), each a batch stored in
InfluxDB before anything is published.

    python -m benchmarks.commands_latency --commands 300 --rate 1000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from access.registry import Registry
from benchmarks.alerts_stack import BenchmarkFailed, local_servers
from core.mqtt import MqttEndpoint, make_client
from core.settings import Settings
from devices.topics import (
    COMMAND_REQUESTS,
    COMMAND_RESULTS,
    COMMANDS,
    command_status_subscription,
    device_topic,
    request_topic,
    telemetry_topic,
)
from ingest.service import run_ingest

TENANT, DEVICE = "home", "car-1"


@contextmanager
def running_ingest(settings: Settings) -> Iterator[None]:
    """Ingest on its own thread and event loop, until the block ends."""
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    ready = threading.Event()

    async def main() -> None:
        nonlocal stop, loop
        loop, stop = asyncio.get_running_loop(), asyncio.Event()
        started = asyncio.Event()
        waiter = asyncio.ensure_future(started.wait())
        waiter.add_done_callback(lambda _: ready.set())
        await run_ingest(settings, stop, ready=started)

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="ingest", daemon=True)
    thread.start()
    if not ready.wait(60):
        raise BenchmarkFailed("ingest did not start within 60 s")
    try:
        yield
    finally:
        assert loop is not None and stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)


def connect(settings: Settings, client_id: str, *, v311: bool = False) -> paho.Client:
    endpoint = MqttEndpoint.from_url(settings.mqtt_url)
    client = (
        paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        if v311
        else make_client(endpoint, client_id)
    )
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    return client


def device(settings: Settings) -> paho.Client:
    """The car: answers every command `succeeded`, once per id."""
    subscribed = threading.Event()
    answered: set[str] = set()
    prefix = settings.topic_prefix

    def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        command = orjson.loads(message.payload)
        if command["id"] in answered:
            return
        answered.add(command["id"])
        result = {"id": command["id"], "status": "succeeded", "ts": time.time()}
        topic = device_topic(prefix, TENANT, "car", DEVICE, COMMAND_RESULTS)
        client.publish(topic, orjson.dumps(result), qos=1)

    client = connect(settings, f"car-{uuid.uuid4().hex[:6]}", v311=True)
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.subscribe(device_topic(prefix, TENANT, "car", DEVICE, COMMANDS), qos=1)
    if not subscribed.wait(10):
        raise BenchmarkFailed("the device did not subscribe")
    return client


def background(settings: Settings, rate: float, stop: threading.Event) -> None:
    """Cow readings at `rate` per second, QoS 1, until `stop`."""
    client = connect(settings, f"cows-{uuid.uuid4().hex[:6]}")
    start, sent = time.perf_counter(), 0
    while not stop.is_set():
        sent += 1
        cow = f"cow-{sent % 200}"
        reading = {"ts": time.time(), "seq": sent, "body_temp_c": 38.6, "activity": 400,
                   "rumination_min": 30, "lat": 52.0, "lon": 5.1, "battery_pct": 80.0}  # fmt: skip
        client.publish(
            telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", cow),
            orjson.dumps(reading),
            qos=1,
        )
        ahead = start + sent / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)  # pacing the load, not waiting for a result
    client.disconnect()
    client.loop_stop()


def round_trips(settings: Settings, commands: int) -> list[float]:
    """Milliseconds from each request to its `succeeded`, one command at a time."""
    done: dict[str, float] = {}
    arrived = threading.Condition()

    def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        update = orjson.loads(message.payload)
        if update["status"] == "succeeded":
            with arrived:
                done[update["id"]] = time.perf_counter()
                arrived.notify_all()

    subscribed = threading.Event()
    watcher = connect(settings, f"watch-{uuid.uuid4().hex[:6]}")
    watcher.on_message = on_message
    watcher.on_subscribe = lambda *args: subscribed.set()
    watcher.subscribe(command_status_subscription(settings.topic_prefix), qos=1)
    if not subscribed.wait(10):
        raise BenchmarkFailed("the watcher did not subscribe")
    asker = connect(settings, f"olga-{uuid.uuid4().hex[:6]}")
    topic = request_topic(settings.topic_prefix, TENANT, COMMAND_REQUESTS, "olga")
    times = []
    for _ in range(commands):
        command_id = uuid.uuid4().hex[:12]
        body = orjson.dumps({"id": command_id, "device": DEVICE, "name": "lock"})
        start = time.perf_counter()
        asker.publish(topic, body, qos=1)
        with arrived:
            if not arrived.wait_for(lambda wanted=command_id: wanted in done, timeout=10):
                raise BenchmarkFailed(f"command {command_id} not answered within 10 s")
        times.append((done[command_id] - start) * 1000)
    for client in (asker, watcher):
        client.disconnect()
        client.loop_stop()
    return times


def run(commands: int, rate: float, workdir: Path) -> str:
    with local_servers(workdir) as servers:
        settings = servers.settings(f"cmd-{uuid.uuid4().hex[:6]}").model_copy(
            update={"registry": str(workdir / "registry.sqlite")}
        )
        registry = Registry(settings.registry)
        registry.add_device(TENANT, "car", DEVICE)
        registry.add_account("operator", "olga", tenant=TENANT)
        car = device(settings)
        stop = threading.Event()
        load = threading.Thread(target=background, args=(settings, rate, stop), daemon=True)
        with running_ingest(settings):
            if rate > 0:
                load.start()
            try:
                times = sorted(round_trips(settings, commands))
            finally:
                stop.set()
                if rate > 0:
                    load.join(10)
        car.disconnect()
        car.loop_stop()
    p99 = times[max(0, round(len(times) * 0.99) - 1)]
    return (
        f"{len(times)} commands with {rate:.0f} readings/s beside them: request → succeeded "
        f"p50 {statistics.median(times):.1f} ms, p99 {p99:.1f} ms, max {times[-1]:.1f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.commands_latency",
        description="Command round trip through a real ingest, with readings beside it.",
        epilog="example: python -m benchmarks.commands_latency --commands 300 --rate 1000",
    )
    parser.add_argument("--commands", type=int, default=300, help="commands, one at a time")
    parser.add_argument("--rate", type=float, default=1000.0, help="background readings/s")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="moclo-commands-") as workdir:
        print(run(args.commands, args.rate, Path(workdir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
