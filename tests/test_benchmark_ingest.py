"""The ingest benchmark's harness at a tiny size, so that it cannot rot: each writer's round,
InfluxDB's raw round and a share group of two must end with every reading stored exactly once
(or, for the bare subscriber, every message counted once), and a latency run must see every
reading stored; never a timing. The long form (`python -m benchmarks.ingest`) records its
figures in benchmarks/results/ingest.md.

Node-RED (d) runs only if it is already in the benchmark's cache: installing it from npm takes
about 15 s and needs the registry, which the suite must not depend on.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import orjson
import pytest

from benchmarks import ingest_nodered
from benchmarks.alerts_latency import LiveLoad, latency, schedule
from benchmarks.alerts_stack import BenchmarkFailed, Servers
from benchmarks.ingest_contenders import CONTENDERS, ROOT, baseline
from benchmarks.ingest_cows import cow_shapes
from benchmarks.ingest_data import Shape, batched, readings_in, single
from benchmarks.ingest_lean import INTEGER_FIELDS, lines_of
from benchmarks.ingest_raw import bodies, raw_round
from benchmarks.ingest_round import Stack, run_round
from benchmarks.ingest_scale import scale_round
from devices.catalogue import DEVICE_TYPES
from ingest.decode import Decoded, Decoder
from moclo.stack import InfluxServer, MosquittoServer
from storage.lineprotocol import reading_line

READINGS = 1_000
SHAPES = {"single": single(READINGS, seed=3), "batched": batched(READINGS, seed=3)}
NODE_RED = pytest.param(
    "d",
    marks=pytest.mark.skipif(
        not ingest_nodered.installed(),
        reason=f"Node-RED {ingest_nodered.NODE_RED} is not in {ingest_nodered.cache_dir()}; "
        "`python -m benchmarks.ingest` installs it (about 15 s from npm)",
    ),
)


@pytest.fixture
def stack(mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path: Path) -> Stack:
    return Stack(Servers(mosquitto.url, influxdb.url, tmp_path), mosquitto.log_path)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("key", ["a", "b", "c", NODE_RED])
def test_a_round_delivers_every_reading_exactly_once(stack: Stack, key: str, shape: str) -> None:
    name = f"t{uuid.uuid4().hex[:10]}"
    result = run_round(stack, CONTENDERS[key], SHAPES[shape], name, lambda _: None)
    # run_round raises BenchmarkFailed unless InfluxDB holds exactly the readings sent (or the
    # bare subscriber counted exactly the messages sent); these say what was measured.
    assert result["readings"] == READINGS
    assert result["messages"] == len(SHAPES[shape].messages)
    if key != "a":
        assert result["stored"] == READINGS
    assert result["peak_rss_mb"] > 0
    assert result["cpu_s"] > 0


def test_the_shapes_hold_the_same_number_of_readings() -> None:
    assert len(SHAPES["single"].messages) == READINGS
    assert len(SHAPES["batched"].messages) == READINGS // 50
    assert all(readings_in(payload) == 50 for _, payload in SHAPES["batched"].messages)


def _points(lines: list[str]) -> set[tuple[str, frozenset[str], str]]:
    """Each line as (series, field=value pairs, timestamp), whatever the fields' order."""
    out = set()
    for line in lines:
        series, fields, ts = line.split(" ")
        out.add((series, frozenset(fields.split(",")), ts))
    return out


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_lean_consumer_writes_the_lines_ingest_writes(shape: str) -> None:
    decoder = Decoder("bench")
    for topic, payload in SHAPES[shape].messages[:200]:
        full = f"bench/{topic}"
        decoded = Decoded()
        decoder.decode(full, payload, time.time_ns(), decoded)
        assert not decoded.rejections
        ingest = [reading_line(reading) for reading in decoded.readings]
        assert _points(lines_of(full, payload)) == _points(ingest)


def test_the_lean_consumers_integer_fields_are_the_catalogues() -> None:
    catalogue = {
        name
        for device in DEVICE_TYPES.values()
        for name, info in device.reading.model_fields.items()
        if info.annotation is int and name != "ts"
    }
    assert catalogue == INTEGER_FIELDS


def test_the_node_red_flow_parses_and_subscribes_to_the_prefix(stack: Stack) -> None:
    settings = stack.servers.settings("t-flow")
    flow = orjson.loads(orjson.dumps(ingest_nodered.flow(settings, "client-1")))
    by_type = {node["type"]: node for node in flow}
    assert by_type["mqtt in"]["topic"] == "t-flow/+/+/+/telemetry"
    assert by_type["mqtt-broker"]["cleansession"] is False
    assert by_type["mqtt-broker"]["autoUnsubscribe"] is False  # else the backlog is lost
    assert by_type["influxdb"]["database"] == "t_flow"
    # A node without a position is a config node to Node-RED: every flow node has one.
    assert all("x" in node for node in flow if "z" in node)


def test_shapes_are_built_from_whole_arrays() -> None:
    with pytest.raises(ValueError, match="whole arrays"):
        batched(1_010, seed=3)
    assert isinstance(SHAPES["batched"], Shape)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_influxdbs_raw_rate_is_measured_on_exactly_the_readings(stack: Stack, shape: str) -> None:
    payloads = bodies(SHAPES[shape])
    assert sum(body.count(b"\n") + 1 for body in payloads) == READINGS
    result = raw_round(stack.servers, SHAPES[shape], payloads, f"t{uuid.uuid4().hex[:10]}")
    # raw_round raises BenchmarkFailed unless InfluxDB holds exactly the readings, once each.
    assert result["stored"] == READINGS
    assert result["seconds"] > 0


def test_a_share_group_of_two_stores_the_backlog_exactly_once(stack: Stack) -> None:
    result = scale_round(stack, SHAPES["single"], 2, f"t{uuid.uuid4().hex[:10]}", lambda _: None)
    assert result["stored"] == READINGS
    assert result["members"] == 2
    assert result["rss_max_mb"] > 0 and result["rss_sum_mb"] > result["rss_max_mb"]


def test_arrays_in_the_latency_schedule_keep_the_rate_with_fewer_devices() -> None:
    load = LiveLoad(rate=1_000, duration_s=4, warmup_s=2, alerting=2, per_message=10)
    plan = schedule(load)
    background = {d.device_id for _, d in plan if d.device_id.startswith("bg-")}
    assert len(background) == round((1_000 - 4) / 10 * 2)
    assert sum(d.readings for _, d in plan) == pytest.approx(1_000 * 6, rel=0.01)
    payload = orjson.loads(next(d for _, d in plan if d.readings == 10).message(1e9))
    assert len({reading["ts"] for reading in payload}) == 10  # distinct points in InfluxDB


def test_a_latency_run_with_arrays_sees_every_reading_stored(stack: Stack) -> None:
    load = LiveLoad(
        rate=500, duration_s=2, warmup_s=1, alerting=2, per_message=10, snapshot_every_s=3600
    )
    result = latency(stack.servers, load, f"t{uuid.uuid4().hex[:10]}", watch_stored=True)
    # latency raises BenchmarkFailed unless every reading is seen stored and every alert came.
    assert result["stored"]["stored"] == result["readings"]
    assert result["readings"] == sum(d.readings for _, d in schedule(load))
    assert result["alerts"] > 0


def test_a_baseline_checkout_runs_its_own_ingest(stack: Stack, tmp_path: Path) -> None:
    """(p) runs the code of the checkout it is given, not this one: a copy whose ingest
    cannot start fails the round, and the unchanged copy stores every reading."""
    checkout = tmp_path / "checkout"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(checkout), "HEAD"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    try:
        name = f"t{uuid.uuid4().hex[:10]}"
        result = run_round(stack, baseline(checkout), SHAPES["single"], name, lambda _: None)
        assert result["stored"] == READINGS
        (checkout / "moclo" / "cli.py").write_text("raise SystemExit('broken baseline')\n")
        with pytest.raises(BenchmarkFailed):
            run_round(stack, baseline(checkout), SHAPES["single"], f"{name}b", lambda _: None)
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(checkout)], cwd=ROOT, check=False
        )


def test_a_cow_round_starts_moclo_ingest_from_a_learnt_day(stack: Stack) -> None:
    cows, day_two = 12, 300
    single_cows, batched_cows = cow_shapes(cows, day_two, seed=3)
    state = orjson.loads(single_cows.alert_state)
    # A day of readings every 10 minutes (a cow offline for 3 h has fewer) learnt beforehand.
    assert sorted(d[5] for d in state["devices"])[1:] == [144] * (cows - 1)
    assert batched_cows.readings == 50 * len(batched_cows.messages) >= 50 * cows
    name = f"t{uuid.uuid4().hex[:10]}"
    result = run_round(stack, CONTENDERS["c"], single_cows, name, lambda _: None)
    assert result["readings"] == day_two
    log = (stack.servers.workdir / name / "log").read_text()
    assert f"alert state restored: {cows} devices" in log
