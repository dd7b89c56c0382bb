"""`python -m benchmarks.scale` at a tiny size on the session's cluster, so it cannot rot: its
checks (every reading stored exactly once per round, by 1, 2 and 4 workers and by one ingest
on Mosquitto; every failover's readings stored by the new owner), never its timings. The long
form records its figures in benchmarks/results/scale.md."""

from __future__ import annotations

from pathlib import Path

from benchmarks.alerts_stack import Servers
from benchmarks.ingest_data import single
from benchmarks.ingest_round import Stack
from benchmarks.scale import WORKERS, report, run
from benchmarks.scale_engine import EngineRig
from moclo.stack import InfluxServer, MosquittoServer
from tests.conftest import Engine


def test_the_scale_benchmark_drains_every_reading_and_times_each_failover(
    engine: Engine, mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path: Path
) -> None:
    shape = single(600, seed=11, types=frozenset({"cow_tracker"}))
    rig = EngineRig.register(
        engine.cluster, engine.registry, influxdb.url, tmp_path, shape.messages
    )
    stack = Stack(Servers(mosquitto.url, influxdb.url, tmp_path), mosquitto.log_path)
    figures = run(rig, stack, shape, 2, lambda line: None)
    assert [row["workers"] for row in figures["engine"]] == list(WORKERS)
    for row in figures["engine"]:
        assert row["readings"] == 600 and row["per_s"] > 0
        assert row["engine_us_per_reading"] > 0  # the nodes' CPU is read from /proc
    assert figures["mosquitto"]["readings"] == 600
    assert len(figures["failover_s"]) == 2 and all(0 < s < 10 for s in figures["failover_s"])
    # Where the time went, read from the new owner's log: in order (its log's times are whole
    # milliseconds), so the log lines the benchmark reads are still there.
    for phases in figures["failover_phases"]:
        assert 0 <= phases["began"] <= phases["taken"] <= phases["stored"] + 0.01, phases
    text = report(
        figures | {"machine": "this", "load": 0.0, "readings": 600, "devices": 3, "partitions": 4},
        "python -m benchmarks.scale --readings 600 --kills 2",
    )
    assert "| engine, 4 worker(s) |" in text and "p99" in text and "release wait" in text
