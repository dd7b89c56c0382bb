"""Alert raised → message accepted by the receiver, with 1,000 readings/s in the background.

Everything is real and in its own process: Mosquitto and InfluxDB, `moclo ingest`, `moclo
notify run` (Apprise, a `json://` channel) and a local HTTP receiver in this process. A
publisher sends healthy cows' readings at `--rate` per second; every `--every` seconds a
pacemaker of its own sends one reading at 170 bpm, which raises `tachycardia` (critical) at
once; its route tells one person with no group wait. Two latencies per alert, from when the
reading was published, and from when ingest's alert change reached a subscriber of the alerts
topic (the alert raised), to when the receiver answered the notifier's POST. Checked: every
alert told exactly once.

    python -m benchmarks.notify [--rate 1000 --alerts 60 --every 0.5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import paho.mqtt.client as paho

from benchmarks.alerts_stack import BenchmarkFailed, Servers, local_servers
from core.mqtt import MqttEndpoint, make_client
from devices.catalogue import DEVICE_TYPES
from devices.topics import alert_subscription, telemetry_topic
from tests.receivers import HttpReceiver

WARD, FARM = "ward", "farm"


def notify_file(receiver: HttpReceiver) -> str:
    return f"""
[[people]]
name = "cardiologist"
tenants = ["{WARD}"]
channels = [ {{ url = "json://{receiver.base}/cardiologist", label = "phone" }} ]

[[routes]]
name = "pacemakers"
tenant = "{WARD}"
device_types = ["pacemaker"]
group_wait = "0s"
notify = ["cardiologist"]
"""


class Background(threading.Thread):
    """Healthy cows' readings at `rate` per second (QoS 1), paced in 10 ms slices."""

    def __init__(self, url: str, prefix: str, rate: float) -> None:
        super().__init__(name="background", daemon=True)
        self.rate, self.prefix, self.sent = rate, prefix, 0
        self.began = self.elapsed = 0.0
        self.stop = threading.Event()
        self.client = make_client(MqttEndpoint.from_url(url), f"bench-bg-{os.getpid()}")
        endpoint = MqttEndpoint.from_url(url)
        self.client.connect(endpoint.host, endpoint.port)
        self.client.loop_start()

    def run(self) -> None:
        cow = DEVICE_TYPES["cow_tracker"].example
        self.began = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - self.began) * self.rate)
            for _ in range(due - self.sent):
                device = f"cow-{self.sent % 500:04d}"
                payload = orjson.dumps({**cow, "ts": time.time(), "seq": self.sent})
                topic = telemetry_topic(self.prefix, FARM, "cow_tracker", device)
                self.client.publish(topic, payload, qos=1)
                self.sent += 1
            self.stop.wait(0.01)  # pacing the load, not synchronising

    def finish(self) -> None:
        self.stop.set()
        self.join(10)
        self.elapsed = time.monotonic() - self.began
        self.client.disconnect()
        self.client.loop_stop()


class AlertWatch:
    """When each pacemaker's alert change reached a subscriber: the alert raised."""

    def __init__(self, url: str, prefix: str) -> None:
        self.raised: dict[str, float] = {}
        self.subscribed = threading.Event()
        endpoint = MqttEndpoint.from_url(url)
        self.client = make_client(endpoint, f"bench-alerts-{os.getpid()}")
        self.client.on_connect = lambda c, *a: c.subscribe(alert_subscription(prefix, WARD), 1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._message
        self.client.connect(endpoint.host, endpoint.port)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise BenchmarkFailed("could not subscribe to the alerts")

    def _message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        change = orjson.loads(msg.payload)
        if change.get("state") == "raised":
            self.raised.setdefault(str(change["device_id"]), time.time())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def child(args: list[str], env: dict[str, str], ready: str, log: Path) -> Iterator[None]:
    """`moclo ARGS` in its own process, once its log says `ready`."""
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moclo.cli", *args],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while ready not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchmarkFailed(f"moclo {args[0]} did not start: {log.read_text()[-500:]}")
            time.sleep(0.1)  # polling a child's log with a deadline
        yield
    finally:
        process.terminate()
        process.wait(30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(servers: Servers, *, rate: float, alerts: int, every_s: float) -> dict[str, object]:
    settings = servers.settings("bench-notify")
    work = servers.workdir
    receiver = HttpReceiver().start()
    (work / "notify.toml").write_text(notify_file(receiver))
    env = {
        "MOCLO_MQTT_URL": settings.mqtt_url,
        "MOCLO_INFLUX_URL": settings.influx_url,
        "MOCLO_INFLUX_DB": settings.influx_db,
        "MOCLO_TOPIC_PREFIX": settings.topic_prefix,
        "MOCLO_SPOOL_DIR": str(work / "spool"),
        "MOCLO_HTTP_LISTEN": "off",
        "MOCLO_UNREGISTERED": "off",
        "MOCLO_REGISTRY": str(work / "registry.sqlite"),
        "MOCLO_NOTIFY_FILE": str(work / "notify.toml"),
        "MOCLO_NOTIFY_OUTBOX": str(work / "outbox.sqlite"),
        "MOCLO_NOTIFY_LISTEN": "off",
    }
    watch = AlertWatch(settings.mqtt_url, settings.topic_prefix)
    published: dict[str, float] = {}
    try:
        with (
            child(["ingest"], env, "ingesting", work / "ingest.log"),
            child(["notify", "run"], env, "notifier: following", work / "notify.log"),
        ):
            background = Background(settings.mqtt_url, settings.topic_prefix, rate)
            background.start()
            pacer = make_client(MqttEndpoint.from_url(settings.mqtt_url), "bench-pacemakers")
            pacer.connect("127.0.0.1", MqttEndpoint.from_url(settings.mqtt_url).port)
            pacer.loop_start()
            example = DEVICE_TYPES["pacemaker"].example
            time.sleep(2.0)  # a warm-up of background load before the first alert
            for n in range(alerts):
                device = f"pm-{n:04d}"
                payload = orjson.dumps({**example, "ts": time.time(), "seq": 1,
                                        "heart_rate_bpm": 170})  # fmt: skip
                published[device] = time.time()
                pacer.publish(telemetry_topic(settings.topic_prefix, WARD, "pacemaker", device),
                              payload, qos=1)  # fmt: skip
                time.sleep(every_s)  # the alerts' pace
            deadline = time.monotonic() + 60
            while len(receiver.received) < alerts and time.monotonic() < deadline:
                time.sleep(0.1)  # polling with a deadline
            background.finish()
            pacer.disconnect()
            pacer.loop_stop()
            sent, elapsed = background.sent, background.elapsed
    finally:
        watch.close()
        receiver.stop()
    told: dict[str, float] = {}
    for request in receiver.received:
        device = str(request.json()["title"]).split()[1]
        if device in told:
            raise BenchmarkFailed(f"{device} was told twice")
        told[device] = request.at
    if set(told) != set(published):
        missing = ", ".join(sorted(set(published) - set(told)))
        logs = "\n".join(
            f"--- {name} (end):\n{(work / name).read_text(errors='replace')[-1500:]}"
            for name in ("ingest.log", "notify.log")
            if (work / name).exists()
        )
        raise BenchmarkFailed(
            f"told {len(told)} of {len(published)} alerts (not {missing}) within 60 s\n{logs}"
        )
    from_reading = [told[d] - published[d] for d in told]
    from_raised = [told[d] - watch.raised[d] for d in told if d in watch.raised]
    return {
        "alerts": alerts,
        "background_rate": round(sent / elapsed),
        "reading_p50_ms": 1000 * statistics.median(from_reading),
        "reading_p99_ms": 1000 * percentile(from_reading, 0.99),
        "raised_p50_ms": 1000 * statistics.median(from_raised),
        "raised_p99_ms": 1000 * percentile(from_raised, 0.99),
        "raised_p90_ms": 1000 * percentile(from_raised, 0.90),
        "raised_max_ms": 1000 * max(from_raised),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="background readings/s")
    parser.add_argument("--alerts", type=int, default=60, help="alerts raised, one at a time")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between alerts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, local_servers(Path(tmp)) as servers:
        result = run(servers, rate=args.rate, alerts=args.alerts, every_s=args.every)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
