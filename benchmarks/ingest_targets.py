"""Issue 18's targets, read from the run's own figures: each target with what this run measured
and whether it is met, so the verdicts can never drift from the tables under them.

The rule engine's target (≤ 1.5 µs a reading) is measured by `benchmarks.rules`
(benchmarks/results/rules.md), not here."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

Figures = dict[str, Any]

# Peak RSS of `moclo ingest` at the time issue 18 was filed (commit 21403b5), the bound the
# issue sets ("no higher than today's"), in MB.
RSS_BEFORE_MB = {"single": 60.0, "batched": 91.0}


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    met: bool | None  # None: reported only, or not measurable in this run


def _rates(figures: Figures, shape: str, key: str) -> dict[int, float]:
    return {
        r["round"]: r["per_s"]
        for r in figures["rounds"]
        if r["shape"] == shape and r["contender"] == key and r["per_s"]
    }


def _ratios(figures: Figures, shape: str, other: str) -> list[float]:
    """c's rate over `other`'s, round by round (only rounds where both were measured)."""
    c, o = _rates(figures, shape, "c"), _rates(figures, shape, other)
    return [c[n] / o[n] for n in sorted(c) if n in o]


def _median_ratio(figures: Figures, shape: str, other: str) -> float | None:
    """The ratio of the medians, as the shape tables give it."""
    c, o = _rates(figures, shape, "c"), _rates(figures, shape, other)
    if not c or not o:
        return None
    return statistics.median(c.values()) / statistics.median(o.values())


def _peak(figures: Figures, shape: str, key: str) -> float | None:
    values = [
        r["peak_rss_mb"]
        for r in figures["rounds"]
        if r["shape"] == shape and r["contender"] == key and r["peak_rss_mb"]
    ]
    return statistics.median(values) if values else None


def _at_least(
    figures: Figures, shape: str, other: str, bound: float, every_round: bool = False
) -> tuple[str, bool | None]:
    median = _median_ratio(figures, shape, other)
    rounds = _ratios(figures, shape, other)
    if median is None:
        return "not measured", None
    text = f"{median:.2f} ({', '.join(f'{r:.2f}' for r in rounds)})"
    worst = min(rounds) if every_round and rounds else median
    return text, worst >= bound


def verdicts(figures: Figures) -> list[Verdict]:
    """Each target of issue 18 this run can judge, shape by shape (cow shapes when present)."""
    shapes = {r["shape"] for r in figures["rounds"]}
    out: list[Verdict] = []
    for kind in ("batched", "single"):
        for shape in (kind, f"cows-{kind}"):
            if shape not in shapes:
                continue
            if kind == "batched":
                checks = [("b", 1.0, False, "the lean consumer"), ("d", 2.0, False, "Node-RED")]
            else:
                checks = [("d", 1.5, True, "Node-RED"), ("a", 1.5, False, "the bare paho drain")]
            for other, bound, every, name in checks:
                text, met = _at_least(figures, shape, other, bound, every)
                when = " in every round" if every else ""
                out.append(Verdict(f"{shape}: ≥ {bound:.1f}× {name}{when}", text, met))
            if kind == "batched":
                raw = _median_ratio(figures, shape, "raw")
                measured = "not measured" if raw is None else f"{raw:.2f}"
                out.append(
                    Verdict(f"{shape}: against InfluxDB raw (moonshot 0.6×)", measured, None)
                )
            peak = _peak(figures, shape, "c")
            if shape == kind and peak is not None:
                bound_mb = RSS_BEFORE_MB[kind]
                out.append(
                    Verdict(
                        f"{shape}: peak RSS ≤ {bound_mb:g} MB", f"{peak:.0f} MB", peak <= bound_mb
                    )
                )
            nodered = _peak(figures, shape, "d")
            if shape != kind and peak is not None and nodered:
                out.append(
                    Verdict(
                        f"{shape}: peak RSS under 1/5 of Node-RED's",
                        f"{peak / nodered:.2f} ({peak:.0f} of {nodered:.0f} MB)",
                        peak / nodered < 0.2,
                    )
                )
    return out


def targets_section(figures: Figures) -> str:
    rows = verdicts(figures)
    if not rows:
        return ""
    lines = [
        "## Against issue 18's targets",
        "",
        "Read from this run's tables below (medians of rounds, each round in brackets). The rule "
        "engine's own target (≤ 1.5 µs a reading) is in `benchmarks/results/rules.md`.",
        "",
        "| target | this run | verdict |",
        "|---|---|---|",
    ]
    word = {True: "met", False: "**missed**", None: "reported"}
    lines += [f"| {v.target} | {v.measured} | {word[v.met]} |" for v in rows]
    return "\n".join(lines)
