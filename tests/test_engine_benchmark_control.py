"""`python -m benchmarks.control` at a tiny size on the session's cluster, so it cannot rot: its
checks (every request announced `sent` on both paths, the CPU read from /proc), never its
timings. The long form records its figures in benchmarks/results/control.md."""

from __future__ import annotations

import uuid
from pathlib import Path

from benchmarks.control import Run, both_paths, report
from moclo.stack import InfluxServer, MosquittoServer
from tests.conftest import Engine


def test_the_control_benchmark_takes_every_request_through_both_gateways(
    engine: Engine, mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path: Path
) -> None:
    run = Run(engine.registry, f"bench-{uuid.uuid4().hex[:6]}", influxdb.url, tmp_path, 20)
    assert mosquitto.pid is not None
    figures = both_paths(run, (mosquitto.url, mosquitto.pid), engine.cluster)
    assert [row["path"] for row in figures["rows"]] == ["mosquitto", "engine"]
    for row in figures["rows"]:
        assert row["requests"] == 20 and row["per_s"] > 0, row
        # CPU comes from /proc in clock ticks (10 ms): 20 requests may cost less than one.
        assert row["cpu_us_per_request"] >= 0 and row["broker_cpu_us_per_request"] >= 0, row
    text = report(figures | {"machine": "this", "load": 0.0}, "python -m benchmarks.control")
    assert "| engine | 20 |" in text and "Ratio engine / Mosquitto" in text
