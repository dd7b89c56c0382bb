"""Partial writes: InfluxDB refuses some points of a write (beyond the retention, a field type
conflict) and stores the others. The refused end as rejections with their reason, the rest is
stored, ingest keeps going, and finding the refused costs O(k log N) requests, measured.

Against the real InfluxDB 1.6.7 (400 "partial write: …"), and through `Fake2xPartialWriteProxy`
for the 422 (2.x) and 500 (older 2.x) answers 1.6.7 cannot give."""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections.abc import Iterator

import pytest

from core.settings import Settings
from devices.topics import telemetry_topic
from ingest.options import IngestOptions
from ingest.sink import InfluxSink
from moclo.stack import InfluxServer
from storage.influx import InfluxClient
from tests.conftest import RunningIngest
from tests.helpers import Influx, cow_json, publish_all, wait_until
from tests.influx_proxies import CountingInfluxProxy, Fake2xPartialWriteProxy

DAY_NS = 86_400 * 10**9


def short_retention(influx: Influx, duration: str = "1d") -> None:
    """Makes a policy of `duration` the database's default (1.6.7's least is 1h)."""
    influx.query(f'CREATE DATABASE "{influx.database}"')
    influx.query(
        f'CREATE RETENTION POLICY "short" ON "{influx.database}" DURATION {duration} '
        "REPLICATION 1 DEFAULT"
    )


@pytest.fixture(params=["1.x-400", "2.x-422", "2.x-500"])
def proxy(request: pytest.FixtureRequest, influxdb: InfluxServer) -> Iterator[CountingInfluxProxy]:
    """The real 1.6.7 behind a counting proxy, or behind the fake 2.x answering 422 or 500."""
    if request.param == "1.x-400":
        made: CountingInfluxProxy = CountingInfluxProxy(influxdb.url)
    else:
        made = Fake2xPartialWriteProxy(influxdb.url, status=int(request.param[-3:]))
    with made:
        yield made


def write_through(url: str, database: str, lines: list[str]) -> list[tuple[int, str]]:
    """The sink's write_batch, given 60 s: a write retried forever fails the test."""

    async def run() -> list[tuple[int, str]]:
        sink = InfluxSink(InfluxClient(url, database))
        try:
            refused = await asyncio.wait_for(sink.write_batch(lines), timeout=60)
            return [(r.index, r.error) for r in refused]
        finally:
            await sink.close()

    return asyncio.run(run())


@pytest.mark.parametrize("k", [1, 5, 50])
def test_finding_k_points_beyond_retention_among_1000_costs_at_most_k_log_n_requests(
    proxy: CountingInfluxProxy, influxdb: InfluxServer, k: int
) -> None:
    n = 1000
    influx = Influx(influxdb.url, f"partial_{uuid.uuid4().hex[:8]}")
    short_retention(influx, "1h")
    now = time.time_ns()
    old = set(random.Random(k).sample(range(n), k))
    lines = [
        f"m,device_id=d{i} v={i}i {now - (3 * DAY_NS if i in old else 1000 * i)}" for i in range(n)
    ]
    refused = write_through(proxy.url, influx.database, lines)
    requests = proxy.writes
    print(f"\n{type(proxy).__name__}: N={n} k={k}: {requests} write requests")
    assert {index for index, _ in refused} == old
    assert all("beyond retention" in error for _, error in refused)
    assert influx.count("m", "v") == n - k
    # One request for the batch, then down the bisection: a left half, and the right one
    # where the left still held the refusals (the answer's count is only a lower bound for
    # the right half, tests/test_retention_edge.py), so 2k·log2(N) at most, not 2N.
    assert requests <= 1 + 2 * k * math.ceil(math.log2(n))


@pytest.mark.parametrize("k", [1, 5])
def test_field_type_conflicts_are_isolated_in_at_most_2k_log_n_requests(
    proxy: CountingInfluxProxy, influxdb: InfluxServer, k: int
) -> None:
    # A type conflict's answer does not count the refused points (it is one shard's), so the
    # bisection must test both halves where the left one fails: twice the requests at most.
    n = 200
    influx = Influx(influxdb.url, f"conflict_{uuid.uuid4().hex[:8]}")
    now = time.time_ns()
    influx.write([f"m,device_id=first v=0.5 {now - 10**9}"])  # `v` is now a float field
    bad = set(random.Random(k).sample(range(n), k))
    lines = [f"m,device_id=d{i} {'v' if i in bad else 'w'}={i}i {now - 1000 * i}" for i in range(n)]
    refused = write_through(proxy.url, influx.database, lines)
    requests = proxy.writes
    print(f"\n{type(proxy).__name__}: N={n} k={k} conflicts: {requests} write requests")
    assert {index for index, _ in refused} == bad
    assert all("field type conflict" in error for _, error in refused)
    assert influx.count("m", "w") == n - k
    assert requests <= 1 + 2 * k * math.ceil(math.log2(n))


def cow_topic(settings: Settings, device: str) -> str:
    return telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", device)


def wave(
    settings: Settings, devices: int, fresh: int, start_seq: int, *, before_s: int
) -> list[tuple[str, bytes]]:
    """Each device: `fresh` readings ending `before_s` ago, 10 s apart, then one three days
    old. (Waves end at different offsets, so no reading of one is a point of another.)"""
    now = int(time.time())
    messages = []
    for d in range(devices):
        topic = cow_topic(settings, f"cow-{d}")
        messages += [
            (topic, cow_json(now - before_s - 10 * j, start_seq + j)) for j in range(fresh)
        ]
        messages.append((topic, cow_json(now - 3 * 86_400, start_seq + 99)))
    return messages


@pytest.mark.parametrize("when", ["before-start", "after-start"])
def test_old_readings_under_a_one_day_retention_are_rejected_and_ingest_goes_on(
    settings: Settings, proxy: CountingInfluxProxy, when: str
) -> None:
    """40 devices, 4 fresh readings and 1 three days old each, into a database whose default
    retention policy keeps 1 day. `before-start`: ingest reads the retention when it starts;
    `after-start`: the policy is made while it runs, so InfluxDB refuses the old points."""
    settings = settings.model_copy(update={"influx_url": proxy.url})
    influx = Influx(settings.influx_url, settings.influx_db)
    if when == "before-start":
        short_retention(influx)
    with RunningIngest(settings, IngestOptions(linger_s=0.05)) as running:
        if when == "after-start":
            short_retention(influx)
        publish_all(settings.mqtt_url, wave(settings, 40, 4, 1, before_s=300))
        wait_until(
            lambda: (
                influx.count("cow_tracker", "seq") == 160
                and influx.count("moclo_rejected", "error") == 40
            ),
            timeout_s=60,
            what="160 fresh readings stored and 40 old ones rejected",
        )
        rows = influx.query('SELECT * FROM "moclo_rejected"')
        assert {row["reason"] for row in rows} == {"beyond_retention"}
        # Refused up front, a rejection is counted once its batch's write is answered, a
        # moment after the rows are readable: the counters are final once all are handled.
        wait_until(lambda: running.stats.messages == 200, what="all 200 messages handled")
        assert running.stats.rejected_by_reason["beyond_retention"] == 40
        # Who said so: InfluxDB, refusing them in a partial write, when the policy came after
        # ingest had read the retention; ingest itself, up front, when it knew. After the first
        # refusal ingest reads the retention again, so when the wave came in several batches
        # (a slow publisher on a busy machine), the later ones are refused up front: some.
        said_by_influxdb = {"beyond retention policy" in row["error"] for row in rows}
        if when == "after-start":
            assert True in said_by_influxdb
        else:
            assert said_by_influxdb == {False}
        # Either way ingest now knows the retention (re-read after the refusal).
        service = running.ingest
        assert service is not None
        wait_until(lambda: service.retention_s == 86_400, what="the retention re-read")
        # Alive and still storing: a second wave is handled like the first.
        publish_all(settings.mqtt_url, wave(settings, 40, 2, 10, before_s=5))
        wait_until(
            lambda: (
                influx.count("cow_tracker", "seq") == 240
                and influx.count("moclo_rejected", "error") == 80
            ),
            timeout_s=60,
            what="the second wave stored and rejected",
        )
        assert running.error is None
    assert running.stats.rejected_by_reason["beyond_retention"] == 80
