"""The read-side benchmark's harness at a tiny size, so that it cannot rot: its generated
history is what ingest writes, every query path answers every bucket with the means computed
from the generator, and every live alert reaches the page; never its timings. The long form
(`python -m benchmarks.query`) records its figures in benchmarks/results/query.md.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from benchmarks.alerts_stack import BenchmarkFailed
from benchmarks.query_data import DEVICE_TYPE, MINUTE_NS, Fleet
from benchmarks.query_live import CHROMIUM, LiveLoad, live_latency
from benchmarks.query_load import count_points, load
from benchmarks.query_series import PATHS, VARIANTS, Answer, Paths, Window, check, measure
from benchmarks.query_stack import Served, Stack, serve
from devices.catalogue import DEVICE_TYPES
from devices.topics import DeviceAddress
from ingest.decode import ValidReading
from moclo.stack import InfluxServer, MosquittoServer
from storage.lineprotocol import reading_line

# Not on a 5-minute boundary, so the day's first bucket is a partial one.
END_MINUTE = 29_530_003


@pytest.fixture
def stack(mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path: Path) -> Stack:
    return Stack(mosquitto.url, influxdb.url, tmp_path)


@pytest.mark.parametrize(("d", "offset"), [(0, 0), (7, 61), (12, 1439)], ids=str)
def test_a_generated_line_is_what_ingest_writes(d: int, offset: int) -> None:
    fleet = Fleet(devices=13, days=1, end_minute=END_MINUTE, tenants=3)
    minute = fleet.start_minute + offset
    reading = DEVICE_TYPES[DEVICE_TYPE].reading.model_validate(
        {**fleet.values(d, minute), "ts": minute * 60}
    )
    address = DeviceAddress(fleet.tenant(d), DEVICE_TYPE, fleet.device_id(d))
    assert fleet.lines(minute, minute + 1)[d] == reading_line(ValidReading(address, reading))


def test_every_path_answers_every_bucket_with_the_generated_means(stack: Stack) -> None:
    fleet = Fleet(devices=6, days=1, end_minute=END_MINUTE, tenants=2)
    db = f"q{uuid.uuid4().hex[:10]}"
    result = load(stack.influx_url, db, fleet, minutes_per_batch=90)
    assert result.points == fleet.points == count_points(stack.influx_url, db, fleet)
    window = Window.last_days(fleet, 7)  # the history is shorter: all of it
    assert window.first_minute == fleet.start_minute
    assert window.buckets == 288  # a partial first bucket (2 readings), then 287 whole

    async def run(served: Served) -> None:
        paths = Paths(stack.influx_url, db, served.url, window, served.token)
        try:
            # `measure` checks each answer: every bucket, and for a device's first query the
            # mean of every field against the generator; BenchmarkFailed if one is wrong.
            samples = await measure(
                paths, fleet, cold_devices=2, warm_devices=1, warm_rounds=2, seed=3,
                progress=lambda _: None,
            )  # fmt: skip
            assert {k: len(v) for k, v in samples.ms.items()} == {
                (path, variant, phase): 2
                for path in PATHS
                for variant in VARIANTS
                for phase in ("cold", "warm")
            }
            # And the check is not vacuous: one mean off by 1e-7 fails it.
            _, answer = await paths.ask("api", fleet.tenant(4), fleet.device_id(4), "all fields")
            assert len(answer.times_ns) == 288
            assert answer.times_ns[1] % (5 * MINUTE_NS) == 0
            check(fleet, 4, window, answer, means=True)
            wrong = Answer(answer.times_ns, {k: list(v) for k, v in answer.columns.items()})
            wrong.columns["humidity_pct"][100] += 1e-7
            with pytest.raises(BenchmarkFailed, match="mean humidity_pct"):
                check(fleet, 4, window, wrong, means=True)
        finally:
            await paths.close()

    with serve(stack, db, f"q{uuid.uuid4().hex[:10]}") as served:
        asyncio.run(run(served))


def test_every_live_alert_reaches_the_page(stack: Stack) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `./dev test` installs Debian's chromium package")
    name = f"q{uuid.uuid4().hex[:10]}"
    # No settling time: the background has begun once a thermostat is shown (live_latency
    # waits for that), which is all the assertions below need of it.
    live = LiveLoad(alerts=3, spacing_s=0.5, background_devices=20, warmup_s=0, name=name)
    result = live_latency(stack, live, lambda _: None)  # BenchmarkFailed if one is missing
    assert result["alerts"] == 3
    assert {place: len(d) for place, d in result["delays_ms"].items()} == {
        "mqtt": 3,
        "sse": 3,
        "sse+readings": 3,
        "page": 3,
    }
    # The page's own work was timed: at least the handlers of its stream's events.
    assert {"event alert", "event readings"} <= set(result["page_work_ms"])
    assert result["devices_shown"] >= 1  # the background thermostats reached the fleet table
    assert result["background_per_s"] > 0
