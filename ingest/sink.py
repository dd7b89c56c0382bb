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
from collections.abc import Sequence
from dataclasses import dataclass

from ingest.influx import InfluxClient, InfluxRefused, InfluxUnavailable

log = logging.getLogger("moclo.ingest.sink")

_SPLITTABLE = (400, 413)


class WriteAborted(Exception):
    """The service is stopping while InfluxDB is unavailable; the batch was not stored."""


@dataclass(frozen=True, slots=True)
class RefusedLine:
    index: int
    error: str


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

    async def write_batch(self, lines: Sequence[str]) -> list[RefusedLine]:
        """Stores `lines`; returns the lines InfluxDB refused for their content (usually none)."""
        refused: list[RefusedLine] = []
        await self._write_or_split(lines, 0, refused)
        return refused

    async def close(self) -> None:
        await self.client.close()

    async def _write_or_split(
        self, lines: Sequence[str], offset: int, refused: list[RefusedLine]
    ) -> None:
        try:
            await self._write_retrying(lines)
        except InfluxRefused as exc:
            if exc.status not in _SPLITTABLE:
                raise
            if len(lines) == 1:
                refused.append(RefusedLine(offset, str(exc)))
                return
            middle = len(lines) // 2
            await self._write_or_split(lines[:middle], offset, refused)
            await self._write_or_split(lines[middle:], offset + middle, refused)

    async def _write_retrying(self, lines: Sequence[str]) -> None:
        attempt = 0
        while True:
            try:
                await self.client.write(lines)
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
