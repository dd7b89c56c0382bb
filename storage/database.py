"""The commands' way to InfluxDB: a client from the settings whose errors say what to set."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from core.settings import Settings
from storage.influx import InfluxClient, InfluxRefused


@contextlib.asynccontextmanager
async def open_influx(settings: Settings) -> AsyncIterator[InfluxClient]:
    """A client for the configured database; "database not found" becomes a message naming the
    setting to check, since it means ingest never wrote there."""
    client = InfluxClient(
        settings.influx_url, settings.influx_db, token=settings.influx_token_value
    )
    try:
        yield client
    except InfluxRefused as exc:
        if "database not found" not in str(exc):
            raise
        raise InfluxRefused(
            f"InfluxDB at {settings.influx_display} has no database {settings.influx_db!r}, so "
            "nothing was ever stored there: set MOCLO_INFLUX_DB or --influx-db to the database "
            "ingest writes to",
            status=404,
        ) from None
    finally:
        await client.close()
