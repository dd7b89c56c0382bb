"""The notification latency benchmark at a tiny size, so it cannot rot: its correctness check
(every alert told exactly once, through real processes), never its timings. The long form
records its figures in benchmarks/results/notify.md."""

from __future__ import annotations

from pathlib import Path

from benchmarks.alerts_stack import Servers
from benchmarks.notify import run
from moclo.stack import InfluxServer, MosquittoServer


def test_every_alert_is_told_once_with_readings_in_the_background(
    mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path: Path
) -> None:
    result = run(Servers(mosquitto.url, influxdb.url, tmp_path), rate=100, alerts=5, every_s=0.1)
    assert result["alerts"] == 5
    assert 0 < float(str(result["raised_p50_ms"])) <= float(str(result["raised_max_ms"]))
