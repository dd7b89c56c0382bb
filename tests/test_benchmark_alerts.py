"""The alert benchmark's harness at a tiny size, so that it cannot rot: its correctness checks
(exact counts in InfluxDB, every expected alert received, a snapshot that restores), never its
timings. The long form (`python -m benchmarks.alerts`) records its figures in
benchmarks/results/alerts.md.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from benchmarks.alerts_latency import LiveLoad, latency, snapshot_period
from benchmarks.alerts_memory import engine_memory
from benchmarks.alerts_stack import BenchmarkFailed, Servers
from benchmarks.alerts_throughput import check_stored, mixed_readings, throughput_round
from devices.catalogue import DEVICE_TYPES
from moclo.stack import InfluxServer, MosquittoServer


@pytest.fixture
def servers(mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path: Path) -> Servers:
    return Servers(mosquitto.url, influxdb.url, tmp_path)


def test_the_mix_is_every_type_in_time_order() -> None:
    messages = mixed_readings(2_000, seed=3, end=1_795_000_000)
    assert len(messages) == 2_000
    assert {topic.split("/")[1] for topic, _ in messages} == set(DEVICE_TYPES)
    assert mixed_readings(2_000, seed=3, end=1_795_000_000) == messages  # a fixed seed repeats


@pytest.mark.parametrize("rules", [True, False], ids=["rules-on", "rules-off"])
def test_a_throughput_round_stores_exactly_what_was_queued(servers: Servers, rules: bool) -> None:
    messages = mixed_readings(300, seed=3)
    name = f"t{uuid.uuid4().hex[:10]}"
    result = throughput_round(servers, messages, rules=rules, name=name, in_child=False)
    assert result["messages"] == result["stored"] == 300
    assert result["unconfirmed"] == 0
    # The round dropped its database: the same check now fails, loudly.
    with pytest.raises(BenchmarkFailed, match="lost 300"):
        check_stored(servers.settings(name), 300)


def test_every_expected_alert_arrives_and_the_snapshot_is_seen(servers: Servers) -> None:
    load = LiveLoad(rate=200, duration_s=6, warmup_s=1, alerting=2, snapshot_every_s=3)
    result = latency(servers, load, f"t{uuid.uuid4().hex[:10]}")
    # Six readings each: a fever cow raises and resolves (2 alerts), a pacemaker raises,
    # resolves and raises again (3); `latency` fails if any expected alert is missing.
    assert result["alerts"] == 2 * 2 + 2 * 3
    assert result["unexpected"] == 0
    # The ingest process reports its periodic snapshots; `latency` fails if a run that should
    # contain one does not.
    assert result["snapshots"]
    first = result["snapshots"][0]
    assert first["slices"] >= 1
    assert first["capture_ms"] >= 0
    assert 0 <= first["write_ms"] < 60_000
    assert all(p["ms"] >= 5 for p in result["gc_pauses"])  # ingest's collections, if any


@pytest.mark.parametrize(
    ("every_s", "run_s", "expected"),
    [(30, 40, 30), (30, 10, 5), (3600, 10, 3600), (30, 34, 17)],
    ids=["fits", "short-run", "no-snapshot-stays", "too-close-to-the-end"],
)
def test_a_short_run_still_contains_a_snapshot(
    every_s: float, run_s: float, expected: float
) -> None:
    assert snapshot_period(every_s, run_s) == expected


def test_the_engine_is_measured_and_its_snapshot_restores() -> None:
    row = engine_memory("cow_tracker", 20)  # BenchmarkFailed if the snapshot does not restore
    assert row.readings == 20 * 4 * 24
    assert list(row.bytes_at) == ["2 days", "4 days"]
    assert all(b > 0 for b in row.bytes_at.values())
    assert row.snapshot_bytes > 0


def test_publish_to_stored_sees_every_reading_once(servers: Servers) -> None:
    load = LiveLoad(rate=200, duration_s=3, warmup_s=1, alerting=2, snapshot_every_s=3600)
    result = latency(servers, load, f"t{uuid.uuid4().hex[:10]}", watch_stored=True)
    stored = result["stored"]
    # `latency` fails unless the watcher saw exactly the readings published, each once.
    assert stored["stored"] == result["readings"] > 0
    # Ordered and finite, not fast: how fast is the benchmark's to say (with its baseline), and
    # a loaded machine stretches a single reading's wait past any bound worth claiming here.
    assert 0 <= stored["p50_ms"] <= stored["p99_ms"] <= stored["max_ms"] < 60_000
    assert stored["polls"] > 1
