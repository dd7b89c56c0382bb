"""The fault scenarios, shortened: real processes, exact counts, nothing lost or doubled.

The long form (`python -m benchmarks.faults`) runs the same code with 20,000 readings and a
30 s outage and records its figures in benchmarks/results/faults.md.
"""

from __future__ import annotations

from pathlib import Path

from tests.faults_harness import (
    Report,
    broker_restart,
    hostile_input,
    influx_outage,
    kill_ingest,
)


def assert_complete(report: Report) -> None:
    assert report.sent > 0
    assert report.stored == report.sent, f"lost {report.lost}: {report}"
    assert report.duplicated == 0, report


def test_kill_9_ingest_repeatedly_during_a_stream(tmp_path: Path) -> None:
    assert_complete(kill_ingest(tmp_path, readings_n=4_000, kills=3, rate=2_000))


def test_influxdb_down_mid_stream_spools_and_drains(tmp_path: Path) -> None:
    report = influx_outage(tmp_path, readings_n=4_000, outage_s=2, rate=2_000)
    assert_complete(report)
    assert "readings spooled" in report.notes[0]


def test_broker_restart_mid_stream(tmp_path: Path) -> None:
    assert_complete(broker_restart(tmp_path, readings_n=4_000, rate=2_000))


def test_hostile_corpus_in_a_valid_stream(tmp_path: Path) -> None:
    report = hostile_input(tmp_path, readings_n=2_000, rate=4_000)
    assert_complete(report)
    assert report.rejected_as_expected
    assert report.rejected == report.hostile
