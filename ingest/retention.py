"""How long InfluxDB keeps readings, read at start, every `every_s` and after a refusal for
age: the decoder then rejects older readings up front as `beyond_retention`."""

from __future__ import annotations

import asyncio
import logging

from ingest.decode import Decoder
from ingest.waits import first_of
from storage.influx import InfluxClient, InfluxError, InfluxUnavailable

log = logging.getLogger("moclo.ingest")


class RetentionWatch:
    def __init__(
        self, client: InfluxClient, decoder: Decoder, *, max_reading_age: float, every_s: float
    ) -> None:
        self.client = client
        self.decoder = decoder
        self.max_reading_age = max_reading_age  # MOCLO_MAX_READING_AGE, the widest accepted
        self.every_s = every_s
        self.due = asyncio.Event()  # set: read the retention again now
        self.retention_s: float | None = None  # what InfluxDB keeps, as last read (None: all)
        self._unknown_said = False

    async def run(self, stop: asyncio.Event) -> None:
        """Reads the retention again every `every_s`, and soon after InfluxDB refused a point
        for its age (someone shortened it)."""
        while not stop.is_set():
            await first_of(self.due, stop, timeout_s=self.every_s)
            if stop.is_set():
                return
            self.due.clear()
            await self.read()

    async def read(self) -> None:
        """Narrows the accepted age to what InfluxDB keeps. Never raises: without the
        retention, MOCLO_MAX_READING_AGE alone applies, and InfluxDB refusing an old point
        still ends as a `beyond_retention` rejection (the sink isolates it)."""
        client = self.client
        try:
            seconds = await client.retention_s()
        except InfluxUnavailable as exc:
            log.warning("could not read the retention of %s (%s); trying again in %.0f s",
                        client.database, exc, self.every_s)  # fmt: skip
            return
        except (InfluxError, ValueError, LookupError, TypeError, AttributeError) as exc:
            if not self._unknown_said:
                self._unknown_said = True
                log.warning(
                    "cannot read how long InfluxDB keeps %s (%s): only MOCLO_MAX_READING_AGE "
                    "(%.1f days) bounds the age of readings; older points InfluxDB refuses are "
                    "rejected as beyond_retention. A token allowed to read buckets (2.x) "
                    "lets ingest reject them up front",
                    client.database,
                    exc,
                    self.max_reading_age / 86_400,
                )
            return
        if seconds != self.retention_s:
            self.retention_s = seconds
            self.decoder.set_retention(seconds)
            if seconds is not None and seconds < self.max_reading_age:
                log.info(
                    "InfluxDB keeps %s for %.1f days: older readings are rejected as "
                    "beyond_retention (MOCLO_MAX_READING_AGE is %.1f days)",
                    client.database,
                    seconds / 86_400,
                    self.max_reading_age / 86_400,
                )
