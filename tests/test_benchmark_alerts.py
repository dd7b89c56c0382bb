"""The alert benchmark's harness at a tiny size, so that it cannot rot: its correctness checks
(exact counts in InfluxDB, every expected alert received, a snapshot that restores), never its
timings. The long form (`python -m benchmarks.alerts`) records its figures in
benchmarks/results/alerts.md.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from benchmarks.alerts import (
    BenchmarkFailed,
    LiveLoad,
    Servers,
    check_stored,
    engine_memory,
    latency,
    mixed_readings,
    throughput_round,
)
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
    assert result["stalls"] == 0
    # The round dropped its database: the same check now fails, loudly.
    with pytest.raises(BenchmarkFailed, match="lost 300"):
        check_stored(servers.settings(name), 300)


def test_every_expected_alert_arrives(servers: Servers) -> None:
    load = LiveLoad(rate=200, duration_s=6, warmup_s=1, alerting=2, linger_s=0.01)
    result = latency(servers, load, f"t{uuid.uuid4().hex[:10]}")
    # Six readings each: a fever cow raises and resolves (2 alerts), a pacemaker raises,
    # resolves and raises again (3); `latency` fails if any expected alert is missing.
    assert result["alerts"] == 2 * 2 + 2 * 3
    assert result["unexpected"] == 0


def test_the_engine_is_measured_and_its_snapshot_restores() -> None:
    row = engine_memory("cow_tracker", 20)  # BenchmarkFailed if the snapshot does not restore
    assert row.readings == 20 * 4 * 24
    assert list(row.bytes_at) == ["2 days", "4 days"]
    assert all(b > 0 for b in row.bytes_at.values())
    assert row.snapshot_bytes > 0
