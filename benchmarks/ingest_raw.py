"""The ingest benchmark's baseline "raw": InfluxDB's own ingest rate for the same readings.

The lines are formatted beforehand, outside the timing, by ingest's own decoder and line
formatting (`ingest/decode.py`, `storage/lineprotocol.py`: the lines ingest writes), and cut into
bodies of 5,000 lines. Into a fresh database, two writer threads (httpx, one connection each)
take the next body in turn and POST it to /write until none is left; the clock runs from the
first request to the last answer (perf_counter in this process, so no polling: the figure is
as exact as the clock). Then the same check as every writer's: exactly N points of N distinct
readings, with ingest's tags and fields. The database is dropped.

This is what InfluxDB does with the readings when nothing else runs before it: no MQTT, no
parsing, no acknowledgements. Both writer threads share this process's GIL, which they release
while waiting for InfluxDB; the formatting is done, so they do little else.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from benchmarks.alerts_stack import BenchmarkFailed, Servers, influxql
from benchmarks.alerts_throughput import check_stored
from benchmarks.ingest_data import Shape
from benchmarks.ingest_round import check_fields
from ingest.decode import Decoded, Decoder
from storage.lineprotocol import reading_line

LINES_PER_BODY = 5_000
WRITERS = 2
PREFIX = "raw"


def bodies(shape: Shape) -> list[bytes]:
    """The shape's readings as ingest writes them, in /write bodies of LINES_PER_BODY lines."""
    decoder = Decoder(PREFIX)
    lines: list[str] = []
    for topic, payload in shape.messages:
        decoded = Decoded()
        decoder.decode(f"{PREFIX}/{topic}", payload, time.time_ns(), decoded)
        if decoded.rejections:
            raise BenchmarkFailed(f"ingest's decoder rejects {decoded.rejections[0]}")
        lines.extend(reading_line(reading) for reading in decoded.readings)
    if len(lines) != shape.readings:
        raise BenchmarkFailed(f"{shape.readings} readings made {len(lines)} lines")
    return [
        "\n".join(lines[i : i + LINES_PER_BODY]).encode()
        for i in range(0, len(lines), LINES_PER_BODY)
    ]


def raw_round(servers: Servers, shape: Shape, payloads: list[bytes], name: str) -> dict[str, Any]:
    """Times WRITERS threads POSTing `payloads` into a fresh database; then the exact check."""
    settings = servers.settings(name)
    influxql(settings, f'CREATE DATABASE "{settings.influx_db}"')
    pending = iter(payloads)
    taking = threading.Lock()
    failures: list[str] = []
    last_answer = [0.0]
    start = threading.Barrier(WRITERS + 1)

    def write() -> None:
        params = {"db": settings.influx_db, "precision": "ns"}
        with httpx.Client(base_url=settings.influx_url, timeout=120) as http:
            start.wait()
            while not failures:
                with taking:
                    body = next(pending, None)
                if body is None:
                    return
                answer = http.post("/write", params=params, content=body)
                if answer.status_code != 204:
                    failures.append(f"/write answered {answer.status_code}: {answer.text}")
                last_answer[0] = max(last_answer[0], time.perf_counter())

    writers = [threading.Thread(target=write, name=f"raw-writer-{i}") for i in range(WRITERS)]
    for writer in writers:
        writer.start()
    start.wait()  # every writer has its client: the clock starts at the first request
    began = time.perf_counter()
    for writer in writers:
        writer.join()
    if failures:
        raise BenchmarkFailed(f"{name}: {failures[0]}")
    seconds = last_answer[0] - began
    result = check_stored(settings, shape.readings) | check_fields(settings)
    influxql(settings, f'DROP DATABASE "{settings.influx_db}"')
    return result | {
        "contender": "raw",
        "shape": shape.name,
        "readings": shape.readings,
        "messages": len(payloads),  # /write requests
        "seconds": seconds,
        "per_s": shape.readings / seconds,
        # InfluxDB's CPU is not a writer's: the columns below do not apply.
        "cpu_s": None,
        "cpu_ms_per_1000": None,
        "peak_rss_mb": None,
        "start_to_done_s": seconds,
    }
