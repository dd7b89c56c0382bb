"""An alert storm through the dispatcher (real SQLite, simulated time): grouping bounds the
messages by groups × people, and still every alert reaches every person it should, once.
How fast it goes is measured by `python -m benchmarks.notify_dispatch`, not here."""

from __future__ import annotations

from pathlib import Path

from benchmarks.notify_dispatch import run_storm


def test_a_thousand_alerts_in_a_minute_to_fifty_people_are_grouped(tmp_path: Path) -> None:
    storm = run_storm(tmp_path / "outbox.sqlite", alerts=1000, seconds=60, people=50, farms=5)
    assert storm.messages == storm.deliveries  # one channel each
    assert storm.messages <= storm.message_bound == 10 * 7 * 10
    assert storm.listed == 1000 * 10  # each alert to each of its farm's ten people, once


def test_without_a_storm_nothing_is_grouped_away(tmp_path: Path) -> None:
    """The control: alerts far apart give one message per alert and person."""
    storm = run_storm(tmp_path / "outbox.sqlite", alerts=10, seconds=600, people=50, farms=5)
    assert storm.messages == storm.listed == 10 * 10
