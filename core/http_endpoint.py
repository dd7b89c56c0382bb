"""A tiny HTTP endpoint for a service's probes: `GET /healthz`, `GET /metrics`.

Plain asyncio, one request per connection: enough for a probe and a Prometheus scrape, and no
web framework in ingest or the notifier. Each route is a function answering (status, content
type, body) at request time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

Route = Callable[[], tuple[int, str, bytes]]


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
