"""The InfluxDB sink: write a batch, close. Retries what can succeed later; isolates what never can.

- Unavailable (down, timeout, 429, 5xx): retried with capped exponential backoff and jitter,
  honouring Retry-After, until it succeeds or the service is told to stop (`WriteAborted`; the
  batch's messages are then not acknowledged, so the broker delivers them again).
- Refused with 400 (a bad line or a field type conflict) or 413 (too large): the batch is split
  in halves until the refused lines are alone; those come back to the caller, the rest is stored.
- Refused for any other reason (auth, missing database): `InfluxRefused` propagates, because no
  retry or split can fix configuration.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ingest.influx import InfluxClient, InfluxRefused, InfluxUnavailable

log = logging.getLogger("moclo.ingest.sink")

_SPLITTABLE = (400, 413)


class WriteAborted(Exception):
    """The service is stopping while InfluxDB is unavailable; the batch was not stored."""


@dataclass(frozen=True, slots=True)
class RefusedLine:
    index: int
    error: str


@dataclass(slots=True)
class LatencyHistogram:
    """Write latency in cumulative buckets, the shape Prometheus expects."""

    bounds: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    counts: list[int] = field(default_factory=lambda: [0] * 12)
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.total_s += seconds
        for i, bound in enumerate(self.bounds):
            if seconds <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def cumulative(self) -> list[tuple[str, int]]:
        running, out = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass(frozen=True, slots=True)
class Backoff:
    first_s: float = 0.2
    cap_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        # Full jitter keeps many restarted consumers from hammering InfluxDB in step.
        return rng.uniform(0.5, 1.0) * min(self.cap_s, self.first_s * 2.0**attempt)


class InfluxSink:
    def __init__(
        self,
        client: InfluxClient,
        *,
        stopping: asyncio.Event | None = None,
        backoff: Backoff = Backoff(),
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self._stopping = stopping or asyncio.Event()
        self._backoff = backoff
        self._rng = rng or random.Random()
        self.retries = 0
        self.available = True  # did the last attempt reach InfluxDB?
        self.latency = LatencyHistogram()

    async def write_batch(self, lines: Sequence[str]) -> list[RefusedLine]:
        """Stores `lines`, retrying while InfluxDB is unavailable; returns the lines it refused
        for their content (usually none)."""
        refused: list[RefusedLine] = []
        await self._write_or_split(lines, 0, refused, retry=True)
        return refused

    async def write_once(
        self, lines: Sequence[str], *, sent: asyncio.Event | None = None
    ) -> list[RefusedLine]:
        """Like `write_batch`, but raises InfluxUnavailable instead of retrying. `sent` is set
        once the (first) request has gone out."""
        refused: list[RefusedLine] = []
        await self._write_or_split(lines, 0, refused, retry=False, sent=sent)
        return refused

    async def close(self) -> None:
        await self.client.close()

    async def _write_or_split(
        self,
        lines: Sequence[str],
        offset: int,
        refused: list[RefusedLine],
        *,
        retry: bool,
        sent: asyncio.Event | None = None,
    ) -> None:
        try:
            if retry:
                await self._write_retrying(lines)
            else:
                await self._timed_write(lines, sent)
        except InfluxRefused as exc:
            if exc.status not in _SPLITTABLE:
                raise
            if len(lines) == 1:
                refused.append(RefusedLine(offset, str(exc)))
                return
            middle = len(lines) // 2
            await self._write_or_split(lines[:middle], offset, refused, retry=retry)
            await self._write_or_split(lines[middle:], offset + middle, refused, retry=retry)

    async def _timed_write(self, lines: Sequence[str], sent: asyncio.Event | None = None) -> None:
        began = time.monotonic()
        try:
            await self.client.write(lines, sent=sent)
        except InfluxUnavailable:
            self.available = False
            raise
        self.available = True
        self.latency.observe(time.monotonic() - began)

    async def _write_retrying(self, lines: Sequence[str]) -> None:
        attempt = 0
        while True:
            try:
                await self._timed_write(lines)
                return
            except InfluxUnavailable as exc:
                if self._stopping.is_set():
                    raise WriteAborted(str(exc)) from exc
                delay = (
                    exc.retry_after
                    if exc.retry_after is not None
                    else self._backoff.delay(attempt, self._rng)
                )
                self.retries += 1
                attempt += 1
                log.warning("InfluxDB unavailable (%s); retry %d in %.1fs", exc, attempt, delay)
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                except TimeoutError:
                    continue
