"""What the alert benchmark's sections share: the servers, the fleet's tenants, InfluxQL, and
the command line that runs a timed ingest in a process of its own."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from core.settings import Settings
from moclo.stack import InfluxServer, MosquittoServer, free_port

DAY = 86_400.0
ROOT = Path(__file__).resolve().parent.parent  # where `python -m benchmarks.alerts` runs
# Which tenant each type belongs to: a farm, a cardiology ward, households, a car fleet.
TENANTS = {
    "cow_tracker": "farm",
    "pacemaker": "ward",
    "blood_pressure": "ward",
    "thermostat": "homes",
    "smart_meter": "homes",
    "fridge": "homes",
    "humidity_meter": "homes",
    "light": "homes",
    "car": "fleet",
}


class BenchmarkFailed(AssertionError):
    """A correctness check failed: the figures of this run mean nothing."""


@dataclass(frozen=True, slots=True)
class Servers:
    mqtt_url: str
    influx_url: str
    workdir: Path

    def settings(self, name: str) -> Settings:
        """Settings for one ingest: its own database, topic prefix, session and spool."""
        return Settings(
            mqtt_url=self.mqtt_url,
            influx_url=self.influx_url,
            influx_db=name.replace("-", "_"),
            topic_prefix=name,
            ingest_client_id=f"ingest-{name}",
            spool_dir=str(self.workdir / "spool"),
            http_listen="off",
            unregistered="off",  # simulated devices, none registered
        )


@contextmanager
def local_servers(workdir: Path) -> Iterator[Servers]:
    broker = MosquittoServer(workdir / "mosquitto", free_port())
    database = InfluxServer(workdir / "influxdb", free_port())
    broker.start()
    try:
        database.start()
        try:
            yield Servers(broker.url, database.url, workdir)
        finally:
            database.stop()
    finally:
        broker.stop()


def influxql(settings: Settings, query: str) -> list[dict[str, Any]]:
    """Every series of an InfluxQL answer, as {"name", "tags", "values"}."""
    response = httpx.post(
        f"{settings.influx_url}/query", data={"db": settings.influx_db, "q": query}, timeout=60
    )
    response.raise_for_status()
    return [s for r in response.json().get("results", []) for s in r.get("series", [])]


def peak_rss_mb() -> float:
    # VmHWM, not getrusage: a child's ru_maxrss starts at its parent's peak.
    status = Path("/proc/self/status").read_text()
    return next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmHWM")) / 1024


def child_command(mode: str, args: dict[str, Any]) -> list[str]:
    """`python -m benchmarks.alerts --child MODE ARGS`: one timed ingest in its own process."""
    return [sys.executable, "-m", "benchmarks.alerts", "--child", mode, orjson.dumps(args).decode()]
