"""Contender (b) of the ingest benchmark: a lean hand-written consumer, the baseline that says
what the job costs without ingest's guarantees. Not product code.

paho-mqtt (MQTT 5, QoS 1, the same persistent session as the bare subscriber), orjson, line
protocol by string formatting, batches of up to 5,000 lines (or what came within 200 ms of a
batch's first line) POSTed to InfluxDB's /write by one writer thread while the next batch fills.
It writes the points ingest writes: measurement = the topic's device type, tags `device_id` and
`tenant` from the topic, every field of the reading plus `seq` (integers with `i`, booleans
true/false, strings quoted), the reading's own `ts` in nanoseconds as ingest rounds it.

What it leaves out, on purpose: validation (a payload is trusted), rejections, alert rules, and
at-least-once: paho acknowledges a message when its callback returns, before the line is stored,
so a crash loses what was in hand. It runs until SIGTERM, then writes what it holds.

    python -m benchmarks.ingest_lean --mqtt-url URL --topic T --client-id ID \
        --influx-url URL --db DB
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from datetime import datetime
from typing import Any

import httpx
import orjson
import paho.mqtt.client as paho

from benchmarks.ingest_bare import connect, session_client, stop_on_sigterm

BATCH_LINES = 5_000
BATCH_WAIT_S = 0.2
# Which numbers are integers. A lean consumer keeps its own copy of the schema (a test checks it
# against devices/catalogue.py); every other number is a float, also when a device sends 0 for
# 0.0, or the field's type would flip and InfluxDB refuse later writes.
INTEGER_FIELDS = frozenset(
    {
        *("seq", "activity", "rumination_min", "heart_rate_bpm", "lead_impedance_ohm"),
        *("systolic_mmhg", "diastolic_mmhg", "pulse_bpm"),
    }
)


def field(name: str, value: Any) -> str:
    # bool before int: bool is a subclass of int.
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return f"{value}i" if name in INTEGER_FIELDS else repr(float(value))
    if isinstance(value, float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def timestamp_ns(ts: Any) -> int:
    if isinstance(ts, float):
        return round(ts * 1_000_000) * 1_000  # microseconds, as ingest keeps a float's
    if isinstance(ts, int):
        return ts * 1_000_000_000
    moment = datetime.fromisoformat(ts)  # RFC 3339 to the microsecond
    return round(moment.timestamp() * 1_000_000) * 1_000


def lines_of(topic: str, payload: bytes | bytearray) -> list[str]:
    """Line protocol for one message: one reading, or an array of them."""
    _, tenant, device_type, device_id, _ = topic.rsplit("/", 4)
    head = f"{device_type},device_id={device_id},tenant={tenant} "
    document = orjson.loads(payload)
    readings = document if isinstance(document, list) else (document,)
    return [
        head
        + ",".join(f"{k}={field(k, v)}" for k, v in reading.items() if k != "ts")
        + f" {timestamp_ns(reading['ts'])}"
        for reading in readings
    ]


class Writer(threading.Thread):
    """POSTs batches in order; a refused or failed write ends the process (a lean consumer
    has no spool)."""

    def __init__(self, influx_url: str, db: str) -> None:
        super().__init__(name="writer", daemon=True)
        self.batches: queue.Queue[list[str] | None] = queue.Queue(maxsize=2)
        self._url = f"{influx_url}/write"
        self._params = {"db": db, "precision": "ns"}
        self.failure: str | None = None

    def run(self) -> None:
        with httpx.Client(timeout=60) as http:
            while (batch := self.batches.get()) is not None:
                response = http.post(self._url, params=self._params, content="\n".join(batch))
                if response.status_code != 204:
                    self.failure = f"/write answered {response.status_code}: {response.text}"
                    return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("--mqtt-url", "--topic", "--client-id", "--influx-url", "--db"):
        parser.add_argument(name, required=True)
    args = parser.parse_args(argv)
    stopping = stop_on_sigterm()
    writer = Writer(args.influx_url, args.db)
    writer.start()
    batch: list[str] = []
    first_at = 0.0

    def flush() -> None:
        nonlocal batch
        if batch:
            writer.batches.put(batch)  # blocks while two batches wait: bounded memory
            batch = []

    def on_message(_c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        nonlocal first_at
        if not batch:
            first_at = time.monotonic()
        batch.extend(lines_of(message.topic, message.payload))
        if len(batch) >= BATCH_LINES:
            flush()

    client = session_client(args.client_id)
    client.on_message = on_message
    connect(client, args.mqtt_url, args.topic)
    while not stopping[0] and writer.is_alive():
        client.loop(timeout=0.05)
        if batch and time.monotonic() - first_at >= BATCH_WAIT_S:
            flush()
    client.disconnect()
    if writer.is_alive():
        flush()
        writer.batches.put(None)
        writer.join()
    if writer.failure:
        print(writer.failure, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
