"""Fault scenarios against real processes: ingest killed, InfluxDB down, broker restarted, and
hostile input, each with exact counts of what was sent, stored, rejected, lost and duplicated.

The test suite runs them shortened (tests/test_faults.py); the long form, `python -m
benchmarks.faults`, runs the same code with 20,000 readings and records its figures, and the
ingest benchmark's memory section runs `steady` and `influx_outage` for its own.

Each scenario starts its own Mosquitto and InfluxDB (the same supervisor as `moclo up`) and runs
`moclo ingest` as a child process, exactly as a user would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from core.mqtt import MqttEndpoint
from devices.topics import telemetry_topic
from moclo.stack import InfluxServer, MosquittoServer, free_port
from simulators.publisher import MqttPublisher

PREFIX = "moclo"
DATABASE = "faults"
TENANT = "farm"
# A healthy cow's fields; the scenarios add `ts` and `seq`.
HEALTHY_COW = {
    "body_temp_c": 38.6,
    "activity": 300,
    "rumination_min": 30,
    "lat": 52.09,
    "lon": 5.12,
    "battery_pct": 90.0,
}


class ScenarioFailed(AssertionError):
    """A condition the scenario waits for did not come within its deadline."""


@dataclass(slots=True)
class Report:
    scenario: str
    sent: int = 0  # valid readings published and acknowledged by the broker
    stored: int = 0  # distinct readings in InfluxDB
    points: int = 0  # points in InfluxDB (more than `stored` would be duplicates)
    hostile: int = 0  # hostile messages published
    rejected: int = 0  # records in moclo_rejected
    rejected_as_expected: bool = True
    peak_rss_mb: float = 0.0  # the highest peak of any ingest process in the scenario
    seconds: float = 0.0
    spooled: int = 0  # readings ingest put in its spool (InfluxDB outage)
    spool_bytes: int = 0  # the spool's size on disk at the end of the outage
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.sent - self.stored

    @property
    def duplicated(self) -> int:
        return self.points - self.stored


def wait_for(probe: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.05)  # polling a condition under a deadline


class Stack:
    """Broker, database and `moclo ingest` processes for one scenario."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.broker = MosquittoServer(workdir / "mosquitto", free_port())
        self.database = InfluxServer(workdir / "influxdb", free_port())
        self.http_port = free_port()
        self.ingest: subprocess.Popen[bytes] | None = None
        self.peak_rss_mb = 0.0
        self._http = httpx.Client(timeout=5)

    def __enter__(self) -> Stack:
        self.broker.start()
        self.database.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_ingest(signal.SIGKILL)
        self.broker.stop()
        self.database.stop()
        self._http.close()

    def start_ingest(self) -> None:
        env = {
            **os.environ,
            "MOCLO_MQTT_URL": self.broker.url,
            "MOCLO_INFLUX_URL": self.database.url,
            "MOCLO_INFLUX_DB": DATABASE,
            "MOCLO_TOPIC_PREFIX": PREFIX,
            "MOCLO_INGEST_CLIENT_ID": "ingest-faults",
            "MOCLO_SPOOL_DIR": str(self.workdir / "spool"),
            "MOCLO_HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
            # Simulated devices that nobody registered, and no registry in the work tree.
            "MOCLO_UNREGISTERED": "off",
            "MOCLO_REGISTRY": str(self.workdir / "registry.sqlite"),
        }
        with (self.workdir / "ingest.log").open("ab") as log:
            self.ingest = subprocess.Popen(
                [sys.executable, "-m", "moclo.cli", "ingest"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_for(lambda: self.health() is not None, 60, "ingest to answer /healthz")

    def stream(self, messages: list[tuple[str, bytes]], rate: float) -> tuple[Publisher, float]:
        """Starts ingest, then a publisher of `messages`; returns it and when it began."""
        self.start_ingest()
        publisher = Publisher(self.broker.url, messages, rate)
        publisher.start()
        return publisher, time.monotonic()

    def stop_ingest(self, signum: int = signal.SIGTERM) -> None:
        process, self.ingest = self.ingest, None
        if process is None or process.poll() is not None:
            return
        self._note_rss(process.pid)
        process.send_signal(signum)
        process.wait(60)

    def _note_rss(self, pid: int) -> None:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_mb = max(self.peak_rss_mb, int(line.split()[1]) / 1024)
        except OSError:
            return  # the process is gone: its peak is the one read before

    def health(self) -> dict[str, object] | None:
        try:
            response = self._http.get(f"http://127.0.0.1:{self.http_port}/healthz")
        except httpx.HTTPError:
            return None
        body: dict[str, object] = response.json()
        return body

    def metric(self, name: str) -> float:
        text = self._http.get(f"http://127.0.0.1:{self.http_port}/metrics").text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def query(self, influxql: str) -> list[list[object]]:
        response = self._http.post(
            f"{self.database.url}/query", data={"db": DATABASE, "q": influxql}
        )
        rows: list[list[object]] = []
        for result in response.json().get("results", []):
            for series in result.get("series", []):
                rows.extend(series["values"])
        return rows

    def count(self, influxql: str) -> int:
        try:
            return sum(int(row[1]) for row in self.query(influxql))  # type: ignore[call-overload]
        except httpx.HTTPError:
            return -1  # InfluxDB is down right now

    def stored(self) -> int:
        # One reading = one (device_id, seq); distinct seq per device counts each once.
        return self.count('SELECT count(distinct("seq")) FROM "cow_tracker" GROUP BY "device_id"')

    def points(self) -> int:
        return self.count('SELECT count("seq") FROM "cow_tracker"')

    def rejected_by_reason(self) -> dict[str, int]:
        response = self._http.post(
            f"{self.database.url}/query",
            data={
                "db": DATABASE,
                "q": 'SELECT count("error") FROM "moclo_rejected" GROUP BY "reason"',
            },
        )
        out: dict[str, int] = {}
        for result in response.json().get("results", []):
            for series in result.get("series", []):
                out[series["tags"]["reason"]] = int(series["values"][0][1])
        return out


def readings(count: int, devices: int) -> Iterator[tuple[str, bytes]]:
    """Valid, healthy cow readings: unique (device, seq), one a second per device, recent."""
    base = int(time.time()) - count // devices - 60
    for i in range(count):
        device, seq = i % devices, i // devices
        yield (
            telemetry_topic(PREFIX, TENANT, "cow_tracker", f"cow-{device:04d}"),
            orjson.dumps({**HEALTHY_COW, "ts": base + seq, "seq": seq}),
        )


class Publisher(threading.Thread):
    """Publishes a stream at a steady rate (QoS 1) on its own thread; survives broker restarts
    because paho re-sends unacknowledged messages after reconnecting."""

    def __init__(self, url: str, messages: list[tuple[str, bytes]], rate_per_s: float) -> None:
        super().__init__(name="publisher", daemon=True)
        self.messages = messages
        self.rate_per_s = rate_per_s
        self.sent = 0
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._publisher = MqttPublisher(
            MqttEndpoint.from_url(url), client_id=f"faults-pub-{time.monotonic_ns()}"
        )

    def run(self) -> None:
        try:
            self._publisher.start()
            began = time.monotonic()
            for i, (topic, payload) in enumerate(self.messages):
                pause = began + i / self.rate_per_s - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # pacing a load generator, not synchronisation
                self._publisher.publish(topic, payload)
                self.sent += 1
            if not self._publisher.flush(timeout_s=120):
                raise ScenarioFailed("the broker did not acknowledge every published message")
        except BaseException as exc:
            self.error = exc
        finally:
            self._publisher.close()
            self.done.set()

    def finish(self, timeout_s: float = 180) -> None:
        if not self.done.wait(timeout_s):
            raise ScenarioFailed("publishing did not finish")
        if self.error is not None:
            raise self.error


def _finish(stack: Stack, report: Report, publisher: Publisher, began: float) -> Report:
    publisher.finish()
    report.sent = len(publisher.messages)
    try:
        wait_for(lambda: stack.stored() >= report.sent, 120, "every reading in InfluxDB")
    finally:
        report.stored = stack.stored()
        report.points = stack.points()
        report.rejected = sum(stack.rejected_by_reason().values())
        stack.stop_ingest()
        report.peak_rss_mb = round(stack.peak_rss_mb, 1)
        report.seconds = round(time.monotonic() - began, 1)
    return report


def kill_ingest(workdir: Path, *, readings_n: int, kills: int, rate: float) -> Report:
    """kill -9 ingest `kills` times during a QoS 1 stream, restarting it each time."""
    report = Report("kill -9 ingest during the stream")
    with Stack(workdir) as stack:
        publisher, began = stack.stream(list(readings(readings_n, 50)), rate)
        for k in range(1, kills + 1):
            target = readings_n * k // (kills + 1)
            wait_for(lambda t=target: stack.stored() >= t, 120, f"{target} readings stored")
            stack.stop_ingest(signal.SIGKILL)
            stack.start_ingest()
        report.notes.append(f"{kills} kills")
        return _finish(stack, report, publisher, began)


def steady(workdir: Path, *, readings_n: int, rate: float) -> Report:
    """The same stream with nothing going wrong: what the other scenarios compare with."""
    report = Report("a steady stream")
    with Stack(workdir) as stack:
        publisher, began = stack.stream(list(readings(readings_n, 50)), rate)
        return _finish(stack, report, publisher, began)


def influx_outage(workdir: Path, *, readings_n: int, outage_s: float, rate: float) -> Report:
    """Stop InfluxDB for `outage_s` mid-stream, then start it again."""
    report = Report(f"InfluxDB down {outage_s:g} s mid-stream")
    with Stack(workdir) as stack:
        publisher, began = stack.stream(list(readings(readings_n, 50)), rate)
        wait_for(lambda: stack.stored() >= readings_n // 5, 120, "a fifth of the stream stored")
        stack.database.stop()
        outage_began = time.monotonic()
        while time.monotonic() - outage_began < outage_s:  # the outage, while watching health
            health = stack.health()
            if health is None or health.get("ok") is not True:
                raise ScenarioFailed(f"ingest unhealthy during the InfluxDB outage: {health}")
            time.sleep(0.2)  # the outage's length is the thing under test
        spooled = stack.metric("moclo_readings_spooled_total")
        spool_bytes = stack.metric("moclo_spool_bytes")
        stack.database.start()
        report.notes.append(f"{int(spooled)} readings spooled ({spool_bytes / 1e6:.1f} MB)")
        report.spooled, report.spool_bytes = int(spooled), int(spool_bytes)
        if spooled <= 0:
            raise ScenarioFailed("nothing went to the spool during the outage")
        _finish(stack, report, publisher, began)
        return report


def broker_restart(workdir: Path, *, readings_n: int, rate: float) -> Report:
    """Restart Mosquitto (SIGTERM, persistence on) mid-stream."""
    report = Report("Mosquitto restarted mid-stream")
    with Stack(workdir) as stack:
        publisher, began = stack.stream(list(readings(readings_n, 50)), rate)
        wait_for(lambda: stack.stored() >= readings_n // 3, 120, "a third of the stream stored")
        stack.broker.stop()
        stack.broker.start()
        wait_for(
            lambda: (h := stack.health()) is not None and h.get("ok") is True,
            60,
            "ingest consuming again",
        )
        report.notes.append("ingest reconnected and resumed")
        return _finish(stack, report, publisher, began)


# (topic, payload, the reason it must be rejected for)
def hostile_corpus(now: int) -> list[tuple[str, bytes, str]]:
    cow = telemetry_topic(PREFIX, TENANT, "cow_tracker", "cow-0001")
    ok = {**HEALTHY_COW, "ts": now, "seq": 1}

    def reading(**changes: object) -> bytes:
        return orjson.dumps({**ok, **changes})

    return [
        (cow, b'{"a":' * 2000, "too_deep"),
        (cow, b"[" * 1100 + b"]" * 1100, "too_deep"),
        # Over ingest's 256 KiB but within the broker's packet bound (264 KiB); a larger
        # packet closes the connection at the broker (tests/test_broker_limits.py).
        (cow, b"x" * (260 * 1024), "payload_too_large"),
        (cow, reading().replace(b"38.6", b"NaN"), "bad_json"),
        (cow, reading().replace(b"38.6", b"Infinity"), "bad_json"),
        (cow, reading().replace(b"38.6", b"1e999"), "bad_json"),
        (cow, reading().replace(b'"seq":1', b'"seq":1180591620717411303424'), "invalid_reading"),
        (cow, reading().replace(b'"activity":300', b'"activity":' + b"9" * 400), "bad_json"),
        (
            cow,
            reading(body_temp_c='38.6\nmoclo_alerts,tenant=farm state="raised" 1'),
            "invalid_reading",
        ),
        (cow, reading(note='a,b=c d"e\\'), "invalid_reading"),
        (cow, reading(ts=now + 86_400), "ts_out_of_window"),
        (cow, reading(ts=now - 400 * 86_400), "ts_out_of_window"),
        (cow, reading(device_id="pacemaker-7"), "identity_mismatch"),
        (telemetry_topic(PREFIX, "Farm,x=1", "cow_tracker", "cow-0001"), reading(), "bad_topic"),
        (telemetry_topic(PREFIX, TENANT, "cow_tracker", "cow 1"), reading(), "bad_topic"),
        (telemetry_topic(PREFIX, TENANT, "toaster", "t-1"), reading(), "unknown_device_type"),
        (cow, b"\xff\xfe\x00garbage", "bad_json"),
        (cow, b"[]", "bad_shape"),
        (cow, b"null", "bad_shape"),
    ]


def hostile_input(workdir: Path, *, readings_n: int, rate: float) -> Report:
    """A hostile corpus mixed into a valid stream; ingest must stay healthy throughout."""
    report = Report("hostile input mixed into the stream")
    with Stack(workdir) as stack:
        valid = list(readings(readings_n, 50))
        corpus = hostile_corpus(int(time.time()))
        mixed: list[tuple[str, bytes]] = []
        step = max(1, len(valid) // len(corpus))
        for i, message in enumerate(valid):
            mixed.append(message)
            if i % step == 0 and i // step < len(corpus):
                topic, payload, _ = corpus[i // step]
                mixed.append((topic, payload))
        publisher, began = stack.stream(mixed, rate)
        while not publisher.done.is_set():
            health = stack.health()
            if health is None or health.get("ok") is not True:
                raise ScenarioFailed(f"ingest unhealthy during hostile input: {health}")
            publisher.done.wait(0.2)
        publisher.finish()
        publisher.messages = valid  # `sent` counts valid readings only
        report.hostile = len(corpus)
        expected: dict[str, int] = {}
        for _, _, reason in corpus:
            expected[reason] = expected.get(reason, 0) + 1
        wait_for(
            lambda: stack.rejected_by_reason() == expected,
            60,
            f"every hostile message rejected with its reason {expected}",
        )
        report.rejected_as_expected = stack.rejected_by_reason() == expected
        return _finish(stack, report, publisher, began)
