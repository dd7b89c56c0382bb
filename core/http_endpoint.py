"""A tiny HTTP endpoint for a service's probes: `GET /healthz`, `GET /metrics`.

Plain asyncio, one request per connection: enough for a probe and a Prometheus scrape, and no
web framework in ingest or the notifier. Each route is a function answering (status, content
type, body) at request time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

Route = Callable[[], tuple[int, str, bytes]]

log = logging.getLogger("moclo.http")


async def serve(host: str, port: int, routes: dict[str, Route]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, path, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            path = path.split("?", 1)[0]  # only the path is logged: a query may hold anything
            route = routes.get(path)
            if method != "GET" or route is None:
                status, kind, body = 404, "text/plain", b"try /healthz or /metrics\n"
            else:
                status, kind, body = _answer(path, route)
            reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error",
                      503: "Service Unavailable"}[status]  # fmt: skip
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


def _answer(path: str, route: Route) -> tuple[int, str, bytes]:
    """The route's answer, or a 500 saying why it has none: a scraper that gets no answer at
    all cannot tell a broken route (ingest/http.py imports /metrics' renderer at the first
    scrape) from a dead service, and the service itself carries on."""
    try:
        return route()
    except Exception as exc:  # any failure of one route: answered and logged, never fatal
        log.exception("%s failed", path)
        what = f"{path} failed ({type(exc).__name__}: {exc}); the service's log has the details\n"
        return 500, "text/plain; charset=utf-8", what.encode()
