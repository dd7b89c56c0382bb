"""ingest/durable.py on its own, against a real InfluxDB (and one that is not there): lines
go to InfluxDB or to the spool, a full spool holds the writer back until the stop, and the
drainer writes the spool out oldest first (the service's whole story is in test_operations.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from ingest.alerts import AlertEngine
from ingest.alerts.rulebook import RuleBook
from ingest.cardinality import CardinalityGuard
from ingest.decode import Decoder
from ingest.durable import DurableWriter
from ingest.pipeline import Pipeline
from ingest.rejections import RejectionLog
from ingest.sink import Backoff, InfluxSink, WriteAborted
from ingest.spool import Spool
from ingest.stats import IngestStats
from moclo.stack import free_port
from storage.influx import InfluxClient
from tests.helpers import Influx


def _writer(url: str, db: str, spool: Spool, stop: asyncio.Event) -> DurableWriter:
    sink = InfluxSink(
        InfluxClient(url, db), stopping=stop, backoff=Backoff(first_s=0.05, cap_s=0.1)
    )
    pipeline = Pipeline(
        Decoder("p"),
        AlertEngine(RuleBook.empty()),
        RejectionLog(),
        CardinalityGuard(burst=100, per_minute=100),
    )
    return DurableWriter(
        sink, spool, pipeline, IngestStats(), stop=stop, beyond_retention=lambda: None
    )


@contextlib.contextmanager
def logged(text: str) -> Iterator[asyncio.Event]:
    """An event set once ingest logs a message containing `text`: what the writer does is
    waited for as it says it, not guessed with a sleep. Enter it inside the event loop."""
    seen = asyncio.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                seen.set()  # the writer logs on the event loop's thread

    logger = logging.getLogger("moclo.ingest")
    handler, level = Seen(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _nobody_listening() -> str:
    # free_port: below the ephemeral range, where no other socket's bind(0) can start a server
    # on it while the test counts on nobody listening.
    return f"http://127.0.0.1:{free_port()}"


def _line(n: int) -> str:
    return f"cow_tracker,tenant=farm,device_id=cow-{n} temperature_c=38.5 {time.time_ns()}"


def test_unavailable_influxdb_spools_and_a_full_spool_waits_for_the_stop(tmp_path: Path) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        spool = Spool(tmp_path / "spool", max_bytes=200)
        writer = _writer(_nobody_listening(), "db", spool, stop)
        await writer.write([_line(1)])
        assert spool.records == 1 and writer.stats.readings_spooled == 1
        with logged("waiting for InfluxDB to take the backlog") as waiting:
            writing = asyncio.ensure_future(writer.write([_line(2) * 3]))  # no room for it
            await asyncio.wait_for(waiting.wait(), 10)
        assert not writing.done()  # held back, and so the broker's window
        stop.set()
        with pytest.raises(WriteAborted):
            await writing
        await writer.sink.close()

    asyncio.run(main())


def test_the_drainer_writes_the_spool_to_influxdb_oldest_first(
    settings: Settings, influx: Influx, tmp_path: Path
) -> None:
    async def main() -> IngestStats:
        stop = asyncio.Event()
        spool = Spool(tmp_path / "spool")
        writer = _writer(settings.influx_url, settings.influx_db, spool, stop)
        await writer.sink.client.ensure_database()
        for n in range(3):
            spool.append([_line(n)])
        await writer.write([_line(9)])  # after the spooled ones: spooled too
        assert spool.records == 4
        with logged("spool drained") as drained:
            draining = asyncio.ensure_future(writer.drain())
            await asyncio.wait_for(drained.wait(), 20)
        assert spool.is_empty()
        stop.set()
        writer.writers_done()
        await draining
        await writer.sink.close()
        return writer.stats

    stats = asyncio.run(main())
    assert stats.readings_stored == 4 and stats.batches_written == 4
    assert influx.count("cow_tracker", "temperature_c") == 4
