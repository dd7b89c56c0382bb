"""The storm benchmark at a small size, so it cannot rot: its checks (every reading stored in
both rounds, every one of the 50 people told, grouped), never its timings."""

from __future__ import annotations

from pathlib import Path

from benchmarks.alerts_stack import Servers
from benchmarks.notify_storm import storm
from moclo.stack import InfluxServer, MosquittoServer


def test_a_storm_round_with_and_without_the_notifier(
    mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path: Path
) -> None:
    result = storm(Servers(mosquitto.url, influxdb.url, tmp_path), 500, 1, seed=3)
    assert result["alerts"] == 1000 and result["people"] == 50
    # Grouped: far fewer messages than alerts × people (10,000), at least one per person.
    assert all(50 <= n <= 500 for n in result["messages_sent"])
