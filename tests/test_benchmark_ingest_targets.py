"""The targets table of benchmarks/results/ingest.md is read from the run's own rounds: a ratio
just over its bound is met, just under is missed, and "in every round" looks at the worst round,
not the median."""

from __future__ import annotations

from typing import Any

from benchmarks.ingest_targets import targets_section, verdicts


def _round(shape: str, key: str, n: int, per_s: float, rss: float = 50.0) -> dict[str, Any]:
    return {"shape": shape, "contender": key, "round": n, "per_s": per_s, "peak_rss_mb": rss}


def _by_target(figures: dict[str, Any]) -> dict[str, bool | None]:
    return {v.target: v.met for v in verdicts(figures)}


def test_batched_met_and_missed_against_their_bounds() -> None:
    rounds = [
        _round("batched", "c", 1, 101.0, rss=90),
        _round("batched", "b", 1, 100.0),
        _round("batched", "d", 1, 51.0),
        _round("batched", "raw", 1, 400.0),
    ]
    got = _by_target({"rounds": rounds})
    assert got["batched: ≥ 1.0× the lean consumer"] is True
    assert got["batched: ≥ 2.0× Node-RED"] is False  # 101 / 51 = 1.98
    assert got["batched: against InfluxDB raw (moonshot 0.6×)"] is None
    assert got["batched: peak RSS ≤ 91 MB"] is True


def test_every_round_is_judged_by_its_worst_round() -> None:
    rounds = [
        _round("single", "c", 1, 300.0, rss=61),
        _round("single", "d", 1, 100.0),
        _round("single", "c", 2, 140.0, rss=61),
        _round("single", "d", 2, 100.0),
        _round("single", "c", 3, 300.0, rss=61),
        _round("single", "d", 3, 100.0),
        _round("single", "a", 1, 100.0),
        _round("single", "a", 2, 100.0),
        _round("single", "a", 3, 100.0),
    ]
    got = _by_target({"rounds": rounds})
    # The median ratio is 3.0, but round 2 is 1.4: missed.
    assert got["single: ≥ 1.5× Node-RED in every round"] is False
    assert got["single: ≥ 1.5× the bare paho drain"] is True  # median 300 / 100
    assert got["single: peak RSS ≤ 60 MB"] is False


def test_cows_memory_against_node_red() -> None:
    rounds = [
        _round("cows-single", "c", 1, 10.0, rss=55),
        _round("cows-single", "d", 1, 5.0, rss=280),
    ]
    got = _by_target({"rounds": rounds})
    assert got["cows-single: peak RSS under 1/5 of Node-RED's"] is True
    rounds[0] = _round("cows-single", "c", 1, 10.0, rss=57)
    got = _by_target({"rounds": rounds})
    assert got["cows-single: peak RSS under 1/5 of Node-RED's"] is False
    assert "**missed**" in targets_section({"rounds": rounds})


def test_a_writer_left_out_is_not_measured_rather_than_met() -> None:
    rounds = [_round("batched", "c", 1, 100.0)]
    got = {v.target: (v.measured, v.met) for v in verdicts({"rounds": rounds})}
    assert got["batched: ≥ 1.0× the lean consumer"] == ("not measured", None)
