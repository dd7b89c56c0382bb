"""Storing lines durably: in InfluxDB if it answers and nothing is spooled before them, else in
the on-disk spool (fsynced), which a drainer writes to InfluxDB oldest first once it is back.

A write returns only once its lines are stored one way or the other: the service acknowledges a
batch's MQTT messages after that. A full spool holds the batch back (and so the broker's window)
until the drainer frees room, or until the service stops (`WriteAborted`: not acknowledged, the
messages are delivered again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from ingest.decode import RejectReason
from ingest.pipeline import Pipeline
from ingest.sink import InfluxSink, RefusedLine, WriteAborted
from ingest.spool import Spool, SpoolFull
from ingest.stats import IngestStats
from ingest.waits import first_of
from storage.influx import InfluxUnavailable
from storage.lineprotocol import count_reading_lines, is_reading_line

log = logging.getLogger("moclo.ingest")


class DurableWriter:
    def __init__(
        self,
        sink: InfluxSink,
        spool: Spool,
        pipeline: Pipeline,
        stats: IngestStats,
        *,
        stop: asyncio.Event,
        beyond_retention: Callable[[], None],
    ) -> None:
        self.sink = sink
        self.spool = spool
        self.pipeline = pipeline  # turns a line InfluxDB refused into a rejection
        self.stats = stats
        self.stop = stop
        self.beyond_retention = beyond_retention  # InfluxDB refused a point for its age
        self._spooled = asyncio.Event()  # wakes the drainer
        self._drained = asyncio.Event()  # wakes a writer waiting for spool room

    async def write(self, lines: list[str], sent: asyncio.Event | None = None) -> None:
        """Stores lines durably. Returns only once they are stored; `sent` is set once they
        are on their way to InfluxDB."""
        if self.spool.is_empty():
            try:
                refused = await self.sink.write_once(lines, sent=sent)
            except InfluxUnavailable as exc:
                log.warning(
                    "InfluxDB unavailable (%s); spooling to %s until it is back",
                    exc,
                    self.spool.directory,
                )
            else:
                self._count_written(lines, refused)
                await self._record_refused(lines, refused)
                return
        await self._spool(lines)

    async def _spool(self, lines: list[str]) -> None:
        while True:
            self._drained.clear()  # before trying, so a pop during the attempt still wakes us
            try:
                await asyncio.to_thread(self.spool.append, lines)
                break
            except SpoolFull as exc:
                # Backpressure: hold this batch (and so the broker's window) until the
                # drainer frees room, or until told to stop.
                log.warning("%s; waiting for InfluxDB to take the backlog", exc)
                await first_of(self._drained, self.stop)
                if self.stop.is_set():
                    raise WriteAborted(str(exc)) from exc
        self.stats.readings_spooled += count_reading_lines(lines)
        self._spooled.set()

    def _count_written(self, lines: Sequence[str], refused: list[RefusedLine]) -> None:
        refused_readings = sum(1 for r in refused if is_reading_line(lines[r.index]))
        self.stats.readings_stored += count_reading_lines(lines) - refused_readings
        self.stats.batches_written += 1

    async def _record_refused(self, lines: Sequence[str], refused: list[RefusedLine]) -> None:
        """Stores a rejection for each refused reading line, all in one write. InfluxDB has
        just answered, so these go to it directly, never through the bounded spool (which may
        be full). A refusal for age means the retention changed: it is read again soon."""
        records: list[str] = []
        for line in refused:
            record = self.pipeline.refused(lines[line.index], line.error, time.time_ns())
            if record is None:
                log.error(
                    "InfluxDB refused an internal line: %s (%s)",
                    lines[line.index][:200],
                    line.error,
                )
                continue
            records += record.lines
            for rejection in record.rejections:
                self.stats.rejected += 1
                self.stats.rejected_by_reason[rejection.reason.value] += 1
                if rejection.reason is RejectReason.BEYOND_RETENTION:
                    self.beyond_retention()
        if records:
            await self.sink.write_batch(records)

    def writers_done(self) -> None:
        """Nothing more will be written: lets the drainer see the stop."""
        self._spooled.set()

    async def drain(self) -> None:
        """Writes spooled batches to InfluxDB, oldest first, retrying until it is back; runs
        until `stop` is set."""
        try:
            while not self.stop.is_set():
                self._spooled.clear()  # before looking, so an append meanwhile wakes us
                record = await asyncio.to_thread(self.spool.peek)
                if record is None:
                    await first_of(self._spooled, self.stop)
                    continue
                try:
                    refused = await self.sink.write_batch(record.lines)
                    self._count_written(record.lines, refused)
                    await self._record_refused(record.lines, refused)
                except WriteAborted:
                    return  # stopping; the spool keeps the batch for the next start
                await asyncio.to_thread(self.spool.pop, record)
                self._drained.set()
                if self.spool.is_empty():
                    log.info("spool drained: InfluxDB has everything")
        finally:
            self._drained.set()  # a writer waiting for room must see the stop too
