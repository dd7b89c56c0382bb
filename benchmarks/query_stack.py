"""What the read-side benchmark runs: its own Mosquitto and InfluxDB (moclo/stack.py), and
`moclo ingest`, `moclo serve` and `moclo simulate` as child processes, as users start them,
each configured through the environment and logging to a file of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from access.tokens import Tokens
from benchmarks.alerts_stack import ROOT, BenchmarkFailed
from moclo.stack import InfluxServer, MosquittoServer, free_port


@dataclass(frozen=True, slots=True)
class Stack:
    mqtt_url: str
    influx_url: str
    workdir: Path
    influx: InfluxServer | None = None  # when it is this benchmark's own

    def restart_influx(self) -> float:
        """Stops InfluxDB (SIGTERM) and starts it again on the same files; the seconds until
        it answered again (it replays its write-ahead log and loads its index meanwhile)."""
        assert self.influx is not None, "only the benchmark's own InfluxDB can be restarted"
        began = time.monotonic()
        self.influx.stop(timeout_s=300)
        self.influx.start(timeout_s=600)
        return time.monotonic() - began

    def settle(
        self, *, below_cores: float = 0.05, window_s: float = 5.0, cap_s: float = 300.0
    ) -> dict[str, float]:
        """Waits until InfluxDB uses less than `below_cores` of CPU over `window_s` (it compacts
        what was just written in the background), at most `cap_s`; how long it took, and the
        CPU seconds it spent meanwhile."""
        assert self.influx is not None and self.influx.pid is not None
        began = time.monotonic()
        first = previous = _cpu_seconds(self.influx.pid)
        while True:
            time.sleep(window_s)  # sampling the CPU counter, bounded by `cap_s`
            now = _cpu_seconds(self.influx.pid)
            quiet = (now - previous) / window_s < below_cores
            previous = now
            if quiet or time.monotonic() - began >= cap_s:
                return {
                    "seconds": time.monotonic() - began,
                    "cpu_s": now - first,
                    "quiet": float(quiet),
                }

    def disk_bytes(self) -> int:
        """What InfluxDB's data and write-ahead log take on disk."""
        assert self.influx is not None
        root = self.influx.directory
        return sum(
            p.stat().st_size for d in ("data", "wal") for p in (root / d).rglob("*") if p.is_file()
        )

    def environment(self, db: str, prefix: str, **more: str) -> dict[str, str]:
        """The environment of a `moclo` child: this stack's servers, `db`, `prefix`."""
        return {
            **os.environ,
            "MOCLO_MQTT_URL": self.mqtt_url,
            "MOCLO_INFLUX_URL": self.influx_url,
            "MOCLO_INFLUX_DB": db,
            "MOCLO_TOPIC_PREFIX": prefix,
            "MOCLO_SPOOL_DIR": str(self.workdir / "spool"),
            "MOCLO_INGEST_CLIENT_ID": f"ingest-{prefix}",
            "MOCLO_HTTP_LISTEN": "off",
            # API tokens live here; the simulated devices are not registered, so ingest
            # checks no registry, and no broker files are generated from it.
            "MOCLO_REGISTRY": str(self.registry),
            "MOCLO_UNREGISTERED": "off",
            "MOCLO_BROKER_AUTH_DIR": "off",
            **more,
        }

    @property
    def registry(self) -> Path:
        return self.workdir / "registry.sqlite"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def servers(workdir: Path) -> Iterator[Stack]:
    """Mosquitto and InfluxDB with their files under `workdir`, stopped on the way out."""
    broker = MosquittoServer(workdir / "mosquitto", free_port())
    database = InfluxServer(workdir / "influxdb", free_port())
    broker.start()
    try:
        database.start()
        try:
            yield Stack(broker.url, database.url, workdir, database)
        finally:
            database.stop(timeout_s=120)  # it writes its cache to disk on the way out
    finally:
        broker.stop()


@contextmanager
def moclo_child(
    name: str, args: list[str], env: dict[str, str], log: Path, *, ready_url: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`moclo ARGS` until the block ends (SIGINT, as Ctrl-C would, then SIGKILL after 30 s);
    with `ready_url`, not before that URL answers 200 (BenchmarkFailed after 60 s)."""
    with log.open("ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "moclo.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
        )
    try:
        if ready_url is not None:
            _wait_ready(name, child, ready_url, log)
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _wait_ready(name: str, child: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise BenchmarkFailed(f"{name} exited with {child.returncode}; see {log}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)  # polling a readiness probe under the deadline above
    raise BenchmarkFailed(f"{name} did not answer 200 at {url} within 60 s; see {log}")


@dataclass(frozen=True, slots=True)
class Served:
    """A running `moclo serve`: its address (no trailing slash) and an admin API token."""

    url: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@contextmanager
def serve(stack: Stack, db: str, prefix: str) -> Iterator[Served]:
    """`moclo serve` on a free port, with a fresh admin token (every tenant) in the stack's
    registry, once /healthz says the database answers and the live stream is subscribed."""
    _, token = Tokens(stack.registry).create(f"bench-{uuid.uuid4().hex[:8]}", None, "admin")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = stack.environment(db, prefix, MOCLO_SERVE_LISTEN=f"127.0.0.1:{port}")
    log = stack.workdir / f"serve-{db}.log"
    with moclo_child("moclo serve", ["serve"], env, log, ready_url=f"{url}/healthz"):
        yield Served(url, token)


@contextmanager
def ingest(stack: Stack, db: str, prefix: str) -> Iterator[None]:
    """`moclo ingest` with its defaults, until its /healthz answers 200 (subscribed)."""
    listen = f"127.0.0.1:{free_port()}"
    env = stack.environment(db, prefix, MOCLO_HTTP_LISTEN=listen)
    log = stack.workdir / f"ingest-{db}.log"
    with moclo_child("moclo ingest", ["ingest"], env, log, ready_url=f"http://{listen}/healthz"):
        yield


@contextmanager
def simulate(stack: Stack, prefix: str, devices: int, interval_s: float) -> Iterator[None]:
    """`moclo simulate`: `devices` thermostats of tenant `homes`, each every `interval_s`, in
    real time until the block ends."""
    args = [
        "simulate",
        "--devices",
        f"thermostat={devices}",
        "--tenant",
        "homes",
        "--interval",
        f"{interval_s:g}s",
        "--seed",
        "1",
        "--forever",
    ]
    env = stack.environment("unused", prefix)
    log = stack.workdir / f"simulate-{prefix}.log"
    with moclo_child("moclo simulate", args, env, log):
        yield
