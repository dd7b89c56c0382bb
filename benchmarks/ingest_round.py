"""One round of the ingest benchmark: one contender, one message shape.

1. Session: the contender is started once and stopped (SIGTERM) as soon as the broker logs its
   subscription, so the broker keeps its persistent session and queues for it.
2. Backlog: every message of the shape is published at QoS 1 under the contender's own topic
   prefix and acknowledged by the broker before the contender starts again.
3. Drain, timed the same way for every writer, by this process polling every 50 ms: the clock
   starts at the first poll that finds the writer's connection in the broker's log (the
   backlog flows from then on; start-up before it, seconds for Node-RED, is left out) and
   stops at the first poll that finds every reading stored: `writePointsOk` of the database's
   shards in InfluxDB's /debug/vars (about a millisecond of the server's time) reaching N,
   then an exact count of the readings equal to N. The bare subscriber (a) stores nothing: its
   end is the poll that finds its report of the Nth message (its own first→last message
   interval is kept as `own_seconds`). Rate = N / interval; the resolution is one poll at each
   end (50 ms, plus the count query's time). The writer's CPU time (/proc, with children) is
   read at each poll: CPU per 1,000 readings is what it spent within the interval; peak RSS
   (VmHWM) is read before it is stopped. Measured first from InfluxDB's first stored point
   instead, Node-RED looked several times faster than it is: it reads the whole backlog
   before its first write lands, and then writes in a burst.
4. Check: InfluxDB holds exactly N points of N distinct readings and no rejection, with the
   measurement, tags and field names ingest writes (BenchmarkFailed otherwise); (a) must have
   received exactly the messages sent. The database is dropped.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from benchmarks.alerts_stack import BenchmarkFailed, Servers, influxql
from benchmarks.alerts_throughput import check_stored, publish_all
from benchmarks.ingest_contenders import ROOT, Contender, topic_filter
from benchmarks.ingest_data import Shape
from benchmarks.ingest_procfs import cpu_seconds, peak_rss_mb
from core.settings import Settings
from devices.catalogue import DEVICE_TYPES

POLL_S = 0.05
LIMIT_S = 900.0  # per drain; far beyond the slowest contender at 100,000 readings


@dataclass(frozen=True, slots=True)
class Stack:
    servers: Servers
    broker_log: Path  # Mosquitto logs each subscription: how a session is known to exist


class Running:
    """A contender's process; its stderr (and stdout, unless piped) go to a log file."""

    def __init__(self, contender: Contender, launch: tuple[list[str], dict[str, str]], log: Path):
        self.log = log
        with log.open("ab") as sink:
            self.process = subprocess.Popen(
                launch[0],
                env=launch[1],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if contender.times_itself else sink,
                stderr=sink,
            )
        self.pid = self.process.pid
        self.started = time.perf_counter()

    def alive(self) -> bool:
        return self.process.poll() is None

    def died(self, what: str) -> BenchmarkFailed:
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        return BenchmarkFailed(
            f"{what}: the contender exited with {self.process.returncode}; {self.log}:\n{tail}"
        )

    def stop(self, timeout_s: float = 30.0) -> str:
        """SIGTERM (each contender stores what it holds and disconnects, keeping its
        session), SIGKILL if it hangs; what it printed on stdout, if piped."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            out, _ = self.process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return out.decode() if out else ""


def _wait(condition: Callable[[], bool], running: Running, what: str, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if not running.alive():
            raise running.died(what)
        if time.monotonic() > deadline:
            running.stop()
            raise BenchmarkFailed(f"{what}: not within {limit_s:.0f} s; see {running.log}")
        time.sleep(POLL_S)  # polling a condition; the deadline bounds it


class LogWatch:
    """New lines of the broker's log since it was created, searched as they come."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = path.stat().st_size
        self._seen = b""

    def has(self, text: str) -> bool:
        with self._path.open("rb") as log:
            log.seek(self._offset)
            more = log.read()
        self._offset += len(more)
        self._seen += more
        return text.encode() in self._seen


def create_session(
    stack: Stack, contender: Contender, settings: Settings, workdir: Path, expected: int
) -> float:
    """Starts the contender and stops it once subscribed; the seconds until it subscribed."""
    watch = LogWatch(stack.broker_log)
    running = Running(contender, contender.launch(settings, workdir, expected), workdir / "log")
    line = f": {settings.ingest_id} 1 {topic_filter(settings)}\n"
    _wait(lambda: watch.has(line), running, "subscribing", 120)
    seconds = time.perf_counter() - running.started
    running.stop()
    if running.process.returncode != 0:
        raise running.died("stopping after subscribing")
    return seconds


def points_written(http: httpx.Client, database: str) -> int:
    """Points InfluxDB accepted into `database` (readings, and alert changes for ingest)."""
    stats = http.get("/debug/vars").json()
    return sum(
        int(v["values"].get("writePointsOk", 0))
        for k, v in stats.items()
        if k.startswith("shard") and v.get("tags", {}).get("database") == database
    )


def readings_stored(settings: Settings) -> int:
    types = ",".join(f'"{t}"' for t in DEVICE_TYPES)
    return sum(s["values"][0][1] for s in influxql(settings, f'SELECT count("seq") FROM {types}'))


def _drain(
    running: Running, connected: Callable[[], bool], done: Callable[[], bool]
) -> dict[str, Any]:
    """Polls until `done`, timing from the first poll at which `connected` (module doc)."""
    start: tuple[float, float] | None = None  # time, CPU seconds
    deadline = time.monotonic() + LIMIT_S
    while True:
        at = time.perf_counter()
        if not running.alive():
            raise running.died("draining")
        if time.monotonic() > deadline:
            raise BenchmarkFailed(f"not drained in {LIMIT_S:.0f} s; see {running.log}")
        cpu = cpu_seconds(running.pid)
        if start is None:
            if connected():
                start = (at, cpu)
        elif done():
            break
        time.sleep(max(0.0, at + POLL_S - time.perf_counter()))  # the poll's period
    return {
        "seconds": at - start[0],
        "cpu_in_interval": cpu - start[1],
        "cpu_s": cpu,
        "peak_rss_mb": peak_rss_mb(running.pid),
        "connect_s": start[0] - running.started,
        "start_to_done_s": at - running.started,
    }


def _stored(http: httpx.Client, settings: Settings, readings: int) -> Callable[[], bool]:
    def done() -> bool:
        written = points_written(http, settings.influx_db)
        return written >= readings and readings_stored(settings) == readings

    return done


def _reported(running: Running, report: dict[str, Any]) -> Callable[[], bool]:
    """Whether the bare subscriber has printed its line (then parsed into `report`)."""
    stdout = running.process.stdout
    assert stdout is not None

    def done() -> bool:
        if not select.select([stdout], [], [], 0)[0]:
            return False
        report.update(orjson.loads(stdout.readline()))
        return True

    return done


def check_fields(settings: Settings) -> dict[str, int]:
    """BenchmarkFailed unless every measurement is a device type with exactly the tags and
    field names ingest writes; how many fields are stored as integers (ingest: all of seq and
    the integer fields)."""
    fields: dict[str, set[str]] = {}
    integers = 0
    for series in influxql(settings, "SHOW FIELD KEYS"):
        fields[series["name"]] = {name for name, _ in series["values"]}
        integers += sum(kind == "integer" for _, kind in series["values"])
    for series in influxql(settings, "SHOW TAG KEYS"):
        name = series["name"]
        if name in DEVICE_TYPES and {t for (t,) in series["values"]} != {"device_id", "tenant"}:
            raise BenchmarkFailed(f"{settings.influx_db}: {name} has tags {series['values']}")
    for name, names in fields.items():
        if name.startswith("moclo_"):
            continue
        expected = (
            {*DEVICE_TYPES[name].reading.measurement_fields, "seq"}
            if (name in DEVICE_TYPES)
            else set()
        )
        if names != expected:
            raise BenchmarkFailed(
                f"{settings.influx_db}: {name} has fields {sorted(names)}, not {sorted(expected)}"
            )
    return {"integer_fields": integers}


def run_round(
    stack: Stack, contender: Contender, shape: Shape, name: str, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Session, backlog, timed drain, exact check, database dropped (see the module's doc)."""
    settings = stack.servers.settings(name)
    workdir = stack.servers.workdir / name
    workdir.mkdir(parents=True, exist_ok=True)
    influxql(settings, f'CREATE DATABASE "{settings.influx_db}"')
    expected_messages = len(shape.messages)
    subscribe_s = create_session(stack, contender, settings, workdir, expected_messages)
    publish_all(settings.mqtt_url, settings.topic_prefix, shape.messages)
    load = os.getloadavg()[0]
    progress(f"    {name}: {len(shape.messages):,} messages queued, draining…")
    watch = LogWatch(stack.broker_log)
    connected = f" as {settings.ingest_id} ("  # "New client connected from … as ID (p5…"
    if shape.alert_state:
        # Where moclo ingest keeps it (its spool folder, made by create_session); the other
        # writers judge no rules.
        spool = workdir / "spool" / settings.ingest_id
        spool.mkdir(mode=0o700, parents=True, exist_ok=True)
        (spool / "alert-state.json").write_bytes(shape.alert_state)
        (spool / "alert-state.json").chmod(0o600)
    launch = contender.launch(settings, workdir, expected_messages)
    running = Running(contender, launch, workdir / "log")
    report: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=settings.influx_url, timeout=30) as http:
            done = (
                _reported(running, report)
                if contender.times_itself
                else _stored(http, settings, shape.readings)
            )
            result = _drain(running, lambda: watch.has(connected), done)
    finally:
        out = running.stop()
    if running.process.returncode != 0:
        raise running.died("stopping after the drain")
    if contender.times_itself:
        at_exit = orjson.loads(out.splitlines()[-1])["messages_at_exit"]
        if not report["messages"] == at_exit == expected_messages:
            raise BenchmarkFailed(
                f"{name}: {expected_messages} messages sent, the subscriber counted "
                f"{report['messages']}, and {at_exit} when it stopped"
            )
        result["own_seconds"] = report["last"] - report["first"]
    else:
        result |= check_stored(settings, shape.readings) | check_fields(settings)
    influxql(settings, f'DROP DATABASE "{settings.influx_db}"')
    return result | {
        "contender": contender.key,
        "shape": shape.name,
        "readings": shape.readings,
        "messages": expected_messages,
        "subscribe_s": subscribe_s,
        "load": load,
        # None when everything arrived within one poll: too fast to time at this size.
        "per_s": shape.readings / result["seconds"] if result["seconds"] > 0 else None,
        "cpu_ms_per_1000": 1e6 * result["cpu_in_interval"] / shape.readings,
    }
