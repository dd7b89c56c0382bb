"""Loads a `Fleet`'s history into InfluxDB as fast as it takes it: one thread generates
batches (a few minutes of every device each), `writers` threads POST them to `/write`, each
over its own keep-alive connection, with a bounded queue between them so memory stays flat.

InfluxDB answers 500 "cache-max-memory-size exceeded" when writes outrun its snapshots to
disk; that batch is written again after a pause (counted as a retry), as ingest would.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from benchmarks.alerts_stack import BenchmarkFailed
from benchmarks.query_data import Fleet

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class LoadResult:
    points: int
    seconds: float
    bytes: int
    batches: int
    retries: int
    writers: int
    lines_per_batch: int

    @property
    def per_s(self) -> float:
        return self.points / self.seconds


def create_database(influx_url: str, db: str) -> None:
    response = httpx.post(f"{influx_url}/query", data={"q": f'CREATE DATABASE "{db}"'})
    response.raise_for_status()


def load(
    influx_url: str,
    db: str,
    fleet: Fleet,
    *,
    writers: int = 2,
    minutes_per_batch: int = 10,
    progress: Progress = lambda _: None,
    report_every_s: float = 15.0,
) -> LoadResult:
    """Writes the whole history; BenchmarkFailed if InfluxDB refuses any of it."""
    create_database(influx_url, db)
    batches: queue.Queue[tuple[int, bytes] | None] = queue.Queue(maxsize=2 * writers)
    done = {"points": 0, "bytes": 0, "batches": 0, "retries": 0}
    lock = threading.Lock()
    failures: list[str] = []

    def write() -> None:
        with httpx.Client(base_url=influx_url, timeout=120) as http:
            while (item := batches.get()) is not None:
                points, body = item
                retries = _post(http, db, body, failures)
                with lock:
                    done["points"] += points
                    done["bytes"] += len(body)
                    done["batches"] += 1
                    done["retries"] += retries

    threads = [
        threading.Thread(target=write, name=f"writer-{i}", daemon=True) for i in range(writers)
    ]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    next_report = began + report_every_s
    try:
        for item in fleet.batches(minutes_per_batch):
            if failures:
                break
            batches.put(item)
            if (now := time.monotonic()) >= next_report:
                next_report = now + report_every_s
                with lock:
                    stored = done["points"]
                rate = stored / (now - began)
                left = (fleet.points - stored) / rate if rate else float("inf")
                progress(
                    f"  {stored:,} of {fleet.points:,} points ({stored / fleet.points:.0%}), "
                    f"{rate:,.0f}/s, about {left / 60:.1f} min left"
                )
    finally:
        for _ in threads:
            batches.put(None)
        for thread in threads:
            thread.join()
    if failures:
        raise BenchmarkFailed(f"InfluxDB refused a batch: {failures[0]}")
    return LoadResult(
        points=done["points"],
        seconds=time.monotonic() - began,
        bytes=done["bytes"],
        batches=done["batches"],
        retries=done["retries"],
        writers=writers,
        lines_per_batch=minutes_per_batch * fleet.devices,
    )


def _post(http: httpx.Client, db: str, body: bytes, failures: list[str]) -> int:
    """One batch, written again after a pause while InfluxDB says it is busy; the retries."""
    for attempt in range(30):
        response = http.post("/write", params={"db": db, "precision": "ns"}, content=body)
        if response.status_code == 204:
            return attempt
        if response.status_code in (500, 503) and attempt < 29:
            time.sleep(min(5.0, 0.2 * 2**attempt))  # backing off from a busy database
            continue
        failures.append(f"{response.status_code} {response.text[:300]}")
        return attempt
    return 30


def count_points(influx_url: str, db: str, fleet: Fleet) -> int:
    """How many readings InfluxDB holds (`count(seq)`, one per reading), shard by shard so no
    single statement has to hold the whole answer."""
    total = 0
    step = 7 * 1440
    with httpx.Client(base_url=influx_url, timeout=600) as http:
        for first in range(fleet.start_minute, fleet.end_minute, step):
            last = min(first + step, fleet.end_minute)
            q = (
                f'SELECT count("seq") FROM "thermostat" WHERE time >= {first * 60}s '
                f"AND time < {last * 60}s"
            )
            response = http.post("/query", data={"db": db, "q": q})
            response.raise_for_status()
            for result in response.json().get("results", []):
                for series in result.get("series", []):
                    total += int(series["values"][0][1])
    return total
