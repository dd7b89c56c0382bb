"""The InfluxDB sink under real failures: a stopped server, a body too large, a bad line."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from ingest.sink import Backoff, InfluxSink, WriteAborted
from moclo.stack import InfluxServer, free_port
from storage.influx import InfluxClient, InfluxRefused
from tests.helpers import Influx

FAST = Backoff(first_s=0.05, cap_s=0.2)


def lines(n: int, start: int = 0) -> list[str]:
    return [
        f"m,device_id=d{i % 7},tenant=t v={i}i {1_795_327_200_000_000_000 + i}"
        for i in range(start, start + n)
    ]


def test_a_write_waits_out_an_influxdb_restart(tmp_path: Path) -> None:
    server = InfluxServer(tmp_path / "influx", free_port())
    server.start()
    Influx(server.url, "db").write([])  # creates the database
    server.stop()

    async def scenario() -> int:
        sink = InfluxSink(InfluxClient(server.url, "db", timeout_s=2), backoff=FAST)
        writing = asyncio.ensure_future(sink.write_batch(lines(100)))
        while sink.retries < 2:  # InfluxDB is down: the sink keeps trying
            await asyncio.wait([writing], timeout=0.05)
            assert not writing.done()
        await asyncio.to_thread(server.start)
        refused = await asyncio.wait_for(writing, 30)
        await sink.close()
        assert refused == []
        return sink.retries

    try:
        assert asyncio.run(scenario()) >= 2
        assert Influx(server.url, "db").count("m", "v") == 100
    finally:
        server.stop()


def test_stopping_while_influxdb_is_down_aborts_without_claiming_success() -> None:
    async def scenario() -> None:
        stop = asyncio.Event()
        sink = InfluxSink(
            InfluxClient(f"http://127.0.0.1:{free_port()}", "db", timeout_s=1),
            stopping=stop,
            backoff=FAST,
        )
        writing = asyncio.ensure_future(sink.write_batch(lines(3)))
        while sink.retries < 1:
            await asyncio.wait([writing], timeout=0.05)
        stop.set()
        with pytest.raises(WriteAborted):
            await asyncio.wait_for(writing, 10)
        await sink.close()

    asyncio.run(scenario())


def test_a_413_splits_the_batch_until_it_fits(tmp_path: Path) -> None:
    server = InfluxServer(tmp_path / "small", free_port(), max_body_size=2_000)
    server.start()
    try:
        Influx(server.url, "db").write([])
        batch = lines(200)  # ~12 kB, six times the limit

        async def scenario() -> list[object]:
            sink = InfluxSink(InfluxClient(server.url, "db"), backoff=FAST)
            refused = await sink.write_batch(batch)
            await sink.close()
            return list(refused)

        assert asyncio.run(scenario()) == []
        assert Influx(server.url, "db").count("m", "v") == 200
    finally:
        server.stop()


def test_a_bad_line_is_isolated_and_the_rest_stored(influxdb: InfluxServer) -> None:
    database = "sink_bad_line"
    Influx(influxdb.url, database).write([])
    batch = [*lines(10), "m,device_id=x v=", *lines(10, start=10)]

    async def scenario() -> list[int]:
        sink = InfluxSink(InfluxClient(influxdb.url, database), backoff=FAST)
        refused = await sink.write_batch(batch)
        await sink.close()
        return [r.index for r in refused]

    assert asyncio.run(scenario()) == [10]
    assert Influx(influxdb.url, database).count("m", "v") == 20


def test_a_missing_database_is_explained_not_retried(influxdb: InfluxServer) -> None:
    async def scenario() -> None:
        sink = InfluxSink(InfluxClient(influxdb.url, "never_created"), backoff=FAST)
        with pytest.raises(InfluxRefused, match="database not found"):
            await sink.write_batch(lines(1))
        assert sink.retries == 0
        await sink.close()

    asyncio.run(scenario())


class FakeInfluxAnswering429(http.server.BaseHTTPRequestHandler):
    """A named fake, for the one failure a real InfluxDB 1.6 cannot be made to produce here:
    '429 Too Many Requests' with Retry-After (rate limiting sits in front of InfluxDB 2.x/Cloud).
    The first write is refused with Retry-After: 0.3, the second is accepted."""

    writes: ClassVar[list[float]] = []

    def do_POST(self) -> None:
        import time

        self.rfile.read(int(self.headers["Content-Length"]))
        FakeInfluxAnswering429.writes.append(time.monotonic())
        if len(FakeInfluxAnswering429.writes) == 1:
            self.send_response(429)
            self.send_header("Retry-After", "0.3")
            self.send_header("Content-Length", "0")
        else:
            self.send_response(204)
            self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_429() -> Iterator[str]:
    FakeInfluxAnswering429.writes = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeInfluxAnswering429)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_retry_after_is_honoured(fake_429: str) -> None:
    async def scenario() -> None:
        # A backoff far shorter than Retry-After: the wait must come from the header.
        sink = InfluxSink(InfluxClient(fake_429, "db"), backoff=Backoff(0.001, 0.001))
        assert await sink.write_batch(lines(1)) == []
        await sink.close()

    asyncio.run(scenario())
    first, second = FakeInfluxAnswering429.writes
    assert second - first >= 0.3
