"""HTTP proxies in front of the suite's real InfluxDB 1.6.7.

`CountingInfluxProxy` is not a fake: it forwards every request unchanged and counts the writes,
so a test can measure what a write costs. `Fake2xPartialWriteProxy` IS a fake, for the one
answer our InfluxDB cannot give: it turns 1.6.7's partial-write 400s into the 422 (or, like
older 2.x, 500) with a JSON `message` that InfluxDB 2.x sends; everything else passes as is.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson

_FORWARDED_HEADERS = ("content-type", "content-encoding", "authorization")


class CountingInfluxProxy:
    """Forwards every request to `upstream` (a real InfluxDB) as is; counts the /write ones."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.writes = 0
        self._lock = threading.Lock()
        self._client = httpx.Client(base_url=upstream, timeout=60)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy._forward(self)

            def do_POST(self) -> None:
                proxy._forward(self)

            def log_message(self, *args: object) -> None:
                """Silent: a request line per write would drown the test's own output."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def reset(self) -> None:
        with self._lock:
            self.writes = 0

    def answer(
        self, path: str, status: int, body: bytes, content_type: str
    ) -> tuple[int, bytes, str]:
        """What the client gets for InfluxDB's answer: the answer itself, here."""
        return status, body, content_type

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        headers = {k: v for k, v in handler.headers.items() if k.lower() in _FORWARDED_HEADERS}
        response = self._client.request(
            handler.command, handler.path, content=body, headers=headers
        )
        if handler.command == "POST" and handler.path.startswith("/write"):
            with self._lock:
                self.writes += 1
        status, content, content_type = self.answer(
            handler.path,
            response.status_code,
            response.content,
            response.headers.get("content-type", ""),
        )
        handler.send_response(status)
        if content_type:
            handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        handler.wfile.write(content)


class Fake2xPartialWriteProxy(CountingInfluxProxy):
    """A FAKE InfluxDB 2.x in front of the real 1.6.7: a partial write (1.6.7's 400 with
    "partial write: …", after it stored the accepted points, as 2.x does) is answered with
    `status` (2.x: 422; older 2.x: 500) and 2.x's JSON body `{"code": …, "message": …}`."""

    def __init__(self, upstream: str, *, status: int = 422) -> None:
        super().__init__(upstream)
        self.status = status

    def answer(
        self, path: str, status: int, body: bytes, content_type: str
    ) -> tuple[int, bytes, str]:
        if not (path.startswith("/write") and status == 400 and b"partial write" in body):
            return status, body, content_type
        error = str(orjson.loads(body)["error"])
        if self.status == 422:
            code, context = "unprocessable entity", "failure writing points to database"
        else:
            code, context = "internal error", "unexpected error writing points to database"
        document = {"code": code, "message": f"{context}: {error}"}
        return self.status, orjson.dumps(document), "application/json; charset=utf-8"


class Fake2xBucketsProxy(CountingInfluxProxy):
    """A FAKE InfluxDB 2.x bucket API in front of the real 1.6.7 (which has none): GET
    /api/v2/buckets?name=DB answers `status` and, for 200, the bucket DB expiring after
    `every_seconds` (0: never), in 2.x's shape; everything else goes to 1.6.7 as is."""

    def __init__(self, upstream: str, *, status: int = 200, every_seconds: int = 0) -> None:
        super().__init__(upstream)
        self.status = status
        self.every_seconds = every_seconds
        self.bucket_reads = 0

    def answer(
        self, path: str, status: int, body: bytes, content_type: str
    ) -> tuple[int, bytes, str]:
        if not path.startswith("/api/v2/buckets"):
            return status, body, content_type
        self.bucket_reads += 1
        if self.status != 200:
            document: dict[str, object] = {"code": "unauthorized", "message": "unauthorized access"}
            return self.status, orjson.dumps(document), "application/json; charset=utf-8"
        name = parse_qs(urlsplit(path).query).get("name", [""])[0]
        rules = [{"type": "expire", "everySeconds": self.every_seconds}]
        document = {"buckets": [{"id": "0a1b2c3d4e5f6a7b", "name": name, "retentionRules": rules}]}
        return 200, orjson.dumps(document), "application/json; charset=utf-8"
