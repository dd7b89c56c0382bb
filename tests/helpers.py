"""Test helpers: waiting on a condition with a deadline, querying InfluxDB, publishing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from core.mqtt import MqttEndpoint, make_client
from core.settings import Settings
from storage.influx import InfluxClient, InfluxRefused

T = TypeVar("T")

# A healthy cow's reading, the base of the tests' readings.
COW: dict[str, Any] = {
    "ts": 1795327200,
    "seq": 1,
    "body_temp_c": 38.6,
    "activity": 420,
    "rumination_min": 31,
    "lat": 52.09,
    "lon": 5.12,
    "battery_pct": 87.5,
}


def cow_json(ts: int, seq: int, **changes: Any) -> bytes:
    """A cow reading as a payload, with `ts` in epoch seconds."""
    return orjson.dumps({**COW, "ts": ts, "seq": seq, **changes})


def moclo(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Runs the `moclo` command as a user would, and returns what it printed."""
    return subprocess.run(
        [sys.executable, "-m", "moclo.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def simulate_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`moclo simulate ARGS --json` against the test's broker and topic prefix."""
    return moclo(
        "simulate",
        *args,
        "--json",
        "--mqtt-url",
        settings.mqtt_url,
        "--topic-prefix",
        settings.topic_prefix,
    )


def log_since(path: Path, offset: int) -> str:
    """What a server wrote to its log after `offset` bytes (what this test caused)."""
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


async def await_disconnect(log_path: Path, log_from: int, client_id: str, what: str) -> None:
    """Returns once Mosquitto has logged `client_id`'s DISCONNECT after `log_from` bytes of its
    log. Mosquitto reads a connection's packets one per turn of its loop; a new connection with
    the same id closes the old one with whatever it has not read yet (its last PUBACKs), so a
    test that reconnects with the same id waits for this first."""
    gone = f"Client {client_id} disconnected.".encode()
    await asyncio.to_thread(
        wait_until,
        lambda: gone in log_path.read_bytes()[log_from:],
        what=f"Mosquitto to read {what}",
    )


def wait_until(probe: Callable[[], T], *, timeout_s: float = 20.0, what: str = "condition") -> T:
    """Polls `probe` until it returns something truthy; fails the test at the deadline."""
    began = time.monotonic()
    deadline = began + timeout_s
    last: T = probe()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last: {last!r}")
        time.sleep(0.05)  # polling interval of a deadline-bounded wait, not synchronisation
        last = probe()
    _note_if_close(what, time.monotonic() - began, timeout_s)
    return last


def _note_if_close(what: str, took_s: float, timeout_s: float) -> None:
    """With MOCLO_TEST_NEAR_MISSES=FILE, a wait that took over a quarter of its deadline is
    noted there (how long, the test, what): where a busier machine would fail first."""
    path = os.environ.get("MOCLO_TEST_NEAR_MISSES")
    if path and took_s > timeout_s / 4:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?")
        with open(path, "a") as notes:
            notes.write(f"{took_s:.1f}/{timeout_s:g} s\t{test}\t{what}\n")


def stream_status(serve_url: str, token: str) -> int:
    """The status of `moclo serve`'s live stream asked for with `token`; the stream is closed
    as soon as it answers (no reading thread), so serve frees its place at once."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream("GET", f"{serve_url}/api/stream", headers=headers, timeout=10) as answer:
        return answer.status_code


class Influx:
    """Synchronous InfluxQL for tests, through the product's own client."""

    def __init__(self, url: str, database: str) -> None:
        self.url = url
        self.database = database

    def query(self, influxql: str) -> list[dict[str, Any]]:
        async def run() -> list[dict[str, Any]]:
            client = InfluxClient(self.url, self.database)
            try:
                rows: list[dict[str, Any]] = []
                for series in await client.query(influxql):
                    for row in series.rows():
                        rows.append({**series.tags, **row})
                return rows
            finally:
                await client.close()

        return asyncio.run(run())

    def write(self, lines: Iterable[str]) -> None:
        async def run() -> None:
            client = InfluxClient(self.url, self.database)
            try:
                await client.ensure_database()
                await client.write(list(lines))
            finally:
                await client.close()

        asyncio.run(run())

    def count(self, measurement: str, field: str, where: str = "") -> int:
        clause = f" WHERE {where}" if where else ""
        try:
            rows = self.query(f'SELECT count("{field}") FROM "{measurement}"{clause}')
        except InfluxRefused as exc:  # a database not created yet counts as empty
            if "database not found" in str(exc):
                return 0
            raise
        return int(rows[0]["count"]) if rows else 0


def publish_all(url: str, messages: Iterable[tuple[str, bytes | str]], qos: int = 1) -> int:
    """Publishes and waits for every PUBACK; returns how many were sent."""
    client = make_client(MqttEndpoint.from_url(url), f"test-pub-{time.monotonic_ns()}")
    endpoint = MqttEndpoint.from_url(url)
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=qos) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=20)
            assert info.is_published(), "broker did not acknowledge a test message"
        return len(infos)
    finally:
        client.disconnect()
        client.loop_stop()


class Subscriber:
    """Collects messages on a topic filter from a real subscription (for alert topics)."""

    def __init__(self, url: str, topic: str) -> None:
        endpoint = MqttEndpoint.from_url(url)
        self.messages: list[paho.MQTTMessage] = []
        self._client = make_client(endpoint, f"test-sub-{time.monotonic_ns()}")
        self._subscribed = False
        self._client.on_message = lambda c, u, m: self.messages.append(m)
        self._client.on_subscribe = lambda *a: setattr(self, "_subscribed", True)
        self._client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self._client.connect(endpoint.host, endpoint.port)
        self._client.loop_start()
        wait_until(lambda: self._subscribed, what=f"subscription to {topic}")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def connack_code(port: int, username: str | None, password: str | None) -> int:
    """CONNACK reason code of an MQTT 5 login to 127.0.0.1:`port` (0: accepted; 135: not
    authorised, which Mosquitto 2.0.11 also sends for a wrong password)."""
    result: list[int] = []
    done = threading.Event()
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"probe-{time.monotonic_ns()}", protocol=paho.MQTTv5
    )
    if username is not None:
        client.username_pw_set(username, password)

    def on_connect(c: paho.Client, u: object, f: object, reason: object, p: object) -> None:
        result.append(reason.value)  # type: ignore[attr-defined]
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert done.wait(10), "no CONNACK within 10 s"
        return result[0]
    finally:
        client.disconnect()
        client.loop_stop()
