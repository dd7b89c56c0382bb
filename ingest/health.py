"""Is ingest consuming? The answer behind `/healthz`.

Not consuming means: disconnected from the broker (paho keeps reconnecting with backoff), or
messages are waiting and none was handled for `stall_after_s` (a stuck pipeline). InfluxDB
being down is not unhealthy in itself while the spool takes the readings; it is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from ingest.batch_source import BatchSource
from ingest.sink import InfluxSink
from ingest.spool import Spool


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    status: str
    details: dict[str, Any]


@dataclass(slots=True)
class Liveness:
    """What the service updates as it works, for the health check to judge."""

    connected: bool = False
    disconnected_since: float | None = None
    last_handled: float | None = None  # monotonic time of the last acknowledged batch
    # Until a first batch is handled, a stall is counted from the start: messages waiting at
    # the first look are a backlog being taken, not a pipeline stuck for `stall_after_s`.
    started: float = field(default_factory=time.monotonic)
    pending: int = 0
    influx_available: bool = True


def assess(
    liveness: Liveness, spool: Spool, *, stall_after_s: float, now: float | None = None
) -> Health:
    now = time.monotonic() if now is None else now
    idle_s = None if liveness.last_handled is None else now - liveness.last_handled
    details: dict[str, Any] = {
        "mqtt_connected": liveness.connected,
        "pending_messages": liveness.pending,
        "seconds_since_last_batch": None if idle_s is None else round(idle_s, 3),
        "influxdb_available": liveness.influx_available,
        "spool_records": spool.records,
        "spool_bytes": spool.size_bytes,
        "spool_oldest_age_s": round(spool.oldest_age_s(), 3),
    }
    if not liveness.connected:
        since = liveness.disconnected_since
        for_s = "" if since is None else f" for {now - since:.0f}s"
        return Health(False, f"not consuming: disconnected from the MQTT broker{for_s}", details)
    waiting_s = now - liveness.started if idle_s is None else idle_s
    if liveness.pending and waiting_s > stall_after_s:
        return Health(
            False,
            f"not consuming: {liveness.pending} messages waiting, none handled "
            f"for {stall_after_s:.0f}s or more",
            details,
        )
    status = "ok" if liveness.influx_available else "ok: InfluxDB unavailable, spooling to disk"
    return Health(True, status, details)


async def watch(
    liveness: Liveness, source: BatchSource, sink: InfluxSink, stop: asyncio.Event
) -> None:
    """Notes the connection state twice a second until `stop`, for the health check."""
    while not stop.is_set():
        connected = source.connected
        if liveness.connected and not connected:
            liveness.disconnected_since = time.monotonic()
        liveness.connected = connected
        liveness.pending = source.pending_count
        liveness.influx_available = sink.available
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
