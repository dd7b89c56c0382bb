"""A tiny HTTP endpoint on the ingest process: `GET /healthz` and `GET /metrics`.

Plain asyncio, one request per connection: enough for a probe and a Prometheus scrape, and no
web framework in the ingest process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson

from ingest.health import Health, assess
from ingest.metrics import Observed, render

Route = Callable[[], tuple[int, str, bytes]]


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
        return 200, "text/plain; version=0.0.4; charset=utf-8", render(observed)

    return await serve(host, int(port), {"/healthz": healthz, "/metrics": metrics})


async def serve(host: str, port: int, routes: dict[str, Route]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, path, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            route = routes.get(path.split("?", 1)[0])
            if method != "GET" or route is None:
                status, kind, body = 404, "text/plain", b"try /healthz or /metrics\n"
            else:
                status, kind, body = route()
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ValueError,
            ConnectionError,
        ):
            pass  # a broken or slow client gets nothing; the service carries on
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
