"""The InfluxDB sink: write a batch, close. Retries what can succeed later; isolates what never can.

- Unavailable (down, timeout, 429, 5xx): retried with capped exponential backoff and jitter,
  honouring Retry-After, until it succeeds or the service is told to stop (`WriteAborted`; the
  batch's messages are then not acknowledged, so the broker delivers them again).
- Refused for some of its lines (400 or 422, or a "partial write" answer with any status: points
  beyond the retention, a field type conflict, a bad line) or too large (413): the batch is
  bisected until the refused lines are alone; those come back to the caller, the rest is stored.
  Only halves that still fail are split again, and where the left half of a refused part is
  stored the right half must hold the refusal, so it is split without being sent whole: a batch
  of N lines with k refused costs at most 1 + 2k·ceil(log2 N) requests, not 2N. Where the answer
  counts the refused points (beyond the retention), a single line known to be one of them is
  not sent again; the count is only a lower bound for a part not sent alone (InfluxDB keeps a
  point beyond the retention when another point of the write opens its shard group), so a
  part it says holds none is still sent. Sending an accepted line again only overwrites its
  point with the same values, and the left-to-right order of the writes keeps the last of two
  lines with the same point the one stored, as in one request.
- Refused for any other reason (auth, missing database): `InfluxRefused` propagates, because no
  retry or split can fix configuration.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from storage.influx import InfluxClient, InfluxPartialWrite, InfluxRefused, InfluxUnavailable

log = logging.getLogger("moclo.ingest.sink")

# Refusals of some lines of a batch (bad line, field type conflict, beyond the retention): 400
# on 1.x and 3.x, 422 on 2.x; 413 is a batch too large. Partial writes are split whatever their
# status (older 2.x answer 500).
_SPLITTABLE = (400, 413, 422)


def _splittable(exc: InfluxRefused) -> bool:
    return isinstance(exc, InfluxPartialWrite) or exc.status in _SPLITTABLE


# The one answer that says exactly how many points were refused: 1.x (and 2.x, which share its
# points writer) count every point beyond the retention policy, and answer so only when no
# shard refused anything else (a type conflict's answer replaces it and its count is one
# shard's). Any other text leaves the count unknown, which costs requests, never a rejection.
_RETENTION_ONLY = re.compile(r"partial write: points beyond retention policy dropped=(\d+)\s*$")


def _refused_count(error: InfluxRefused) -> int | None:
    """How many of the points sent InfluxDB refused, if its answer says so exactly."""
    match = _RETENTION_ONLY.search(str(error))
    return int(match.group(1)) if match and isinstance(error, InfluxPartialWrite) else None


def _with_count(error: InfluxRefused, count: int) -> InfluxRefused:
    """The refusal `error` narrowed to a part that holds `count` of its refused points."""
    text = _RETENTION_ONLY.sub(f"partial write: points beyond retention policy dropped={count}",
                               str(error))  # fmt: skip
    return InfluxPartialWrite(text, status=error.status)


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
        error = await self._attempt(lines, retry=retry, sent=sent)
        if error is not None:
            await self._isolate(lines, offset, refused, error, answered=True, retry=retry)

    async def _attempt(
        self, lines: Sequence[str], *, retry: bool, sent: asyncio.Event | None = None
    ) -> InfluxRefused | None:
        """Writes `lines`; None if stored, the refusal if InfluxDB refused some of them."""
        try:
            if retry:
                await self._write_retrying(lines)
            else:
                await self._timed_write(lines, sent)
        except InfluxRefused as exc:
            if not _splittable(exc):
                raise
            return exc
        return None

    async def _isolate(
        self,
        lines: Sequence[str],
        offset: int,
        refused: list[RefusedLine],
        error: InfluxRefused,
        *,
        answered: bool,
        retry: bool,
    ) -> None:
        """Stores what InfluxDB accepts of `lines`, which hold at least one refused line, and
        adds the refused ones to `refused`. `error` is InfluxDB's answer to `lines` when
        `answered`, else to a larger part that held them (their refusal was inferred)."""
        count = _refused_count(error)
        if len(lines) == 1:
            if not answered and count is None:
                # The line's own answer names its own reason, not a neighbour's.
                own = await self._attempt(lines, retry=retry)
                if own is None:
                    return
                error = own
            refused.append(RefusedLine(offset, str(error)))
            return
        middle = len(lines) // 2
        left, right = lines[:middle], lines[middle:]
        left_error = await self._attempt(left, retry=retry)
        if left_error is not None:
            await self._isolate(left, offset, refused, left_error, answered=True, retry=retry)
        left_count = 0 if left_error is None else _refused_count(left_error)
        if count is not None and left_count is not None and count > left_count:
            # The count of refused lines is known (an answer that names only points beyond
            # the retention, and how many): at least the rest of them are in the right half,
            # which InfluxDB stored but for those. Only "at least": InfluxDB keeps a point
            # beyond the retention when another point of the same write opens its shard group,
            # so the left half sent alone may be refused more than it was in `lines`. Where
            # none seems left, the right half is sent below rather than trusted.
            rest = _with_count(error, count - left_count)
            await self._isolate(right, offset + middle, refused, rest, answered=False, retry=retry)
            return
        if left_error is None and error.status != 413:
            # A refusal for content is the same every time: with the left half stored, the
            # refused line is in the right half, so sending it whole would only say so again.
            # (Not for 413: both halves may fit.)
            await self._isolate(right, offset + middle, refused, error, answered=False, retry=retry)
            return
        right_error = await self._attempt(right, retry=retry)
        if right_error is not None:
            await self._isolate(
                right, offset + middle, refused, right_error, answered=True, retry=retry
            )

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
