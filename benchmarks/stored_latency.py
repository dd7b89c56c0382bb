"""Publish → stored latency, seen from outside ingest: when each reading becomes visible in
InfluxDB.

The publisher stamps every reading with the wall-clock time it publishes it (`ts`). A thread
asks InfluxDB, again and again, how many readings it holds per 10 ms of `ts` over the last
few seconds (`SELECT count(seq) ... GROUP BY time(10ms)`, a few hundred rows however fast the
stream). Readings that appear in a bucket between two answers were stored between those two
moments (the two questions' times), and not before they were published, so each gets the
delay from its bucket's middle to the middle of that interval. The resolution is therefore
about half a poll (a poll is the query's own time plus POLL_S, reported as `mean_poll_ms`)
plus 5 ms; the figures are rounded to whole milliseconds. Every reading published must
be seen, or the measurement fails: nothing is estimated for readings that were not observed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx

from benchmarks.alerts_stack import BenchmarkFailed
from core.settings import Settings
from devices.catalogue import DEVICE_TYPES

BUCKET_S = 0.01
POLL_S = 0.01  # pause between two answers
WINDOW_S = 3.0  # how far back each poll looks; a reading stored later than this is missed


class StoredWatcher:
    """Polls InfluxDB on a thread between `start()` and `stop()`; then `delays_ms()`."""

    def __init__(self, settings: Settings) -> None:
        self._url = f"{settings.influx_url}/query"
        self._db = settings.influx_db
        measurements = ",".join(f'"{t}"' for t in DEVICE_TYPES)
        self._select = f'SELECT count("seq") FROM {measurements} WHERE time >= {{since}}'
        self._seen: Counter[int] = Counter()  # bucket (10 ms of ts) → readings seen
        self._delays: Counter[int] = Counter()  # delay in ms → readings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stored-watcher", daemon=True)
        self._previous = time.time()
        self.polls = 0
        self.query_s = 0.0  # time spent waiting for answers: with POLL_S, the resolution

    def start(self) -> None:
        self._previous = time.time()
        self._thread.start()

    def stop(self, *, expected: int, timeout_s: float = 30) -> None:
        """Waits until `expected` readings were seen (BenchmarkFailed after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while sum(self._seen.values()) < expected and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting on the watcher thread's count, under a deadline
        self._stop.set()
        self._thread.join(10)
        seen = sum(self._seen.values())
        if seen != expected:
            raise BenchmarkFailed(
                f"publish → stored: {expected} readings published, {seen} seen stored within "
                f"{WINDOW_S:g} s of their publication"
            )

    def delays_ms(self) -> list[int]:
        """Every reading's delay, ascending."""
        return sorted(self._delays.elements())

    def summary(self) -> dict[str, Any]:
        delays = self.delays_ms()
        return {
            "stored": len(delays),
            "p50_ms": _percentile(delays, 50),
            "p99_ms": _percentile(delays, 99),
            "max_ms": delays[-1] if delays else None,
            "polls": self.polls,
            "mean_poll_ms": round(1000 * self.query_s / max(1, self.polls)) + POLL_S * 1000,
        }

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                asked = time.time()
                since = int((asked - WINDOW_S) / BUCKET_S) * BUCKET_S
                query = self._select.format(since=int(since * 1e9)) + " GROUP BY time(10ms)"
                answer = client.post(self._url, data={"db": self._db, "q": query, "epoch": "ns"})
                self.query_s += time.time() - asked
                if answer.status_code == 200:
                    # Stored after the previous question was asked, and before this one.
                    self._count(answer.json(), self._previous, asked)
                self._previous = asked
                self.polls += 1
                self._stop.wait(POLL_S)

    def _count(self, document: dict[str, Any], after: float, before: float) -> None:
        totals: Counter[int] = Counter()
        for result in document.get("results", []):
            for series in result.get("series", []):
                for stamp, count in series["values"]:
                    if count:
                        totals[round(stamp / 1e9 / BUCKET_S)] += count
        for bucket, total in totals.items():
            new = total - self._seen[bucket]
            if new > 0:
                self._seen[bucket] = total
                published = (bucket + 0.5) * BUCKET_S
                # Stored in [after, before], and not before it was published: the middle.
                stored_at = (max(after, published) + before) / 2
                self._delays[round((stored_at - published) * 1000)] += new


def _percentile(ordered: list[int], p: float) -> int | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]
