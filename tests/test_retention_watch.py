"""ingest/retention.py on its own: reading the retention never raises, and what is read
narrows the decoder (the service's whole story is in test_retention.py)."""

from __future__ import annotations

import asyncio

from core.settings import Settings
from ingest.decode import Decoder
from ingest.retention import RetentionWatch
from moclo.stack import free_port
from storage.influx import InfluxClient


def _read(url: str, db: str, *, create: bool) -> float | None:
    async def main() -> float | None:
        client = InfluxClient(url, db)
        watch = RetentionWatch(client, Decoder("p"), max_reading_age=86_400.0, every_s=600.0)
        if create:
            await client.ensure_database()
        await watch.read()
        await client.close()
        return watch.retention_s

    return asyncio.run(main())


def test_an_unreachable_influxdb_leaves_the_retention_unknown() -> None:
    # free_port: below the ephemeral range, where no other socket's bind(0) can start a server.
    assert _read(f"http://127.0.0.1:{free_port()}", "db", create=False) is None


def test_autogen_keeps_everything(settings: Settings) -> None:
    assert _read(settings.influx_url, settings.influx_db, create=True) is None


def test_run_reads_again_when_due_and_ends_on_stop(settings: Settings) -> None:
    async def main() -> int:
        client = InfluxClient(settings.influx_url, settings.influx_db)
        await client.ensure_database()
        watch = RetentionWatch(client, Decoder("p"), max_reading_age=86_400.0, every_s=600.0)
        reads = 0
        read = watch.read
        was_read = asyncio.Event()

        async def counting() -> None:
            nonlocal reads
            reads += 1
            await read()
            was_read.set()

        watch.read = counting  # type: ignore[method-assign]
        stop = asyncio.Event()
        running = asyncio.ensure_future(watch.run(stop))
        watch.due.set()
        await asyncio.wait_for(was_read.wait(), 10)
        stop.set()
        await asyncio.wait_for(running, 5)
        await client.close()
        return reads

    assert asyncio.run(main()) == 1
