"""A tiny HTTP endpoint on the ingest process: `GET /healthz` and `GET /metrics`.

Plain asyncio, one request per connection: enough for a probe and a Prometheus scrape, and no
web framework in the ingest process.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import orjson

from core.http_endpoint import serve
from ingest.health import Health, assess

if TYPE_CHECKING:
    from ingest.metrics import Observed


def health_response(health: Health) -> tuple[int, str, bytes]:
    body = orjson.dumps({"ok": health.ok, "status": health.status, **health.details})
    return (200 if health.ok else 503), "application/json", body


async def serve_health_and_metrics(
    listen: str, observed: Observed, *, stall_after_s: float
) -> asyncio.Server | None:
    """Serves `/healthz` and `/metrics` on `listen` (HOST:PORT; port 0 picks one), or nothing
    when `listen` is "off"."""
    if listen == "off":
        return None
    host, _, port = listen.rpartition(":")

    def healthz() -> tuple[int, str, bytes]:
        liveness = observed.liveness
        liveness.connected = observed.source.connected
        liveness.pending = observed.source.pending_count
        return health_response(assess(liveness, observed.spool, stall_after_s=stall_after_s))

    def metrics() -> tuple[int, str, bytes]:
        # Imported at the first scrape: prometheus_client costs an ingest that nobody scrapes
        # 0.4-1.5 MB of resident memory (29 modules) for nothing.
        from ingest.metrics import render

        return 200, "text/plain; version=0.0.4; charset=utf-8", render(observed)

    return await serve(host, int(port), {"/healthz": healthz, "/metrics": metrics})
