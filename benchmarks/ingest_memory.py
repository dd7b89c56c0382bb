"""Ingest's memory: flat with the length of a backlog, and bounded through an InfluxDB outage.

1. Flat: the same fleet (same devices, so the same alert state) with 100,000 and then
   1,000,000 readings queued at the broker (2 and 20 days of readings), each drained by ingest
   with its defaults (rules on, at-least-once, a window of 10,000 messages or 3 MiB) in a
   process of its own (`benchmarks/alerts_throughput.py`'s round, which also checks that
   InfluxDB then holds exactly those readings). The target: peak RSS (VmHWM) of the two
   runs within 20 %; whether it was met is part of the result (`within_target`), not a
   failure of the run.
2. Outage: `tests/faults_harness.py`'s InfluxDB outage (ingest as `moclo ingest`, a QoS 1 stream,
   InfluxDB stopped for 30 s, ingest's /healthz watched throughout) at a higher rate, with
   ingest's peak RSS and what went to the spool, against the configured spool bound
   (`IngestOptions.spool_max_bytes`) and against the same stream with no outage.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.alerts_stack import DAY, BenchmarkFailed, Servers
from benchmarks.alerts_throughput import mixed_readings, throughput_round
from ingest.options import IngestOptions
from tests import faults_harness

FLAT_WITHIN = 0.20


def flat(
    servers: Servers, small: int, large: int, seed: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Peak RSS of a drain of `small` and of `large` queued readings of one fleet."""
    runs = []
    for n in (small, large):
        progress(f"  {n:,} queued readings (making and queueing them)…")
        messages = mixed_readings(n, seed=seed, span_s=2 * DAY * n / small)
        result = throughput_round(servers, messages, rules=True, name=f"mem{n}")
        del messages
        progress(f"    peak RSS {result['peak_rss_mb']:.0f} MB, {result['per_s']:,.0f} readings/s")
        runs.append({"readings": n, **result})
    ratio = runs[1]["peak_rss_mb"] / runs[0]["peak_rss_mb"]
    # A missed target is a finding to report, not a failed check: the drains were exact.
    return {"runs": runs, "ratio": ratio, "within_target": abs(ratio - 1) <= FLAT_WITHIN}


def outage(workdir: Path, *, rate: float, outage_s: float) -> dict[str, Any]:
    """The same stream with and without a 30 s InfluxDB outage in it."""
    readings = int(rate * (outage_s + 30))
    with_outage = faults_harness.influx_outage(
        workdir / "outage", readings_n=readings, outage_s=outage_s, rate=rate
    )
    without = faults_harness.steady(workdir / "steady", readings_n=readings, rate=rate)
    for report in (with_outage, without):
        if report.stored != report.sent or report.points != report.sent:
            raise BenchmarkFailed(f"{report.scenario}: {report}")
    bound = IngestOptions().spool_max_bytes
    return {
        "rate": rate,
        "readings": readings,
        "outage_s": outage_s,
        "peak_rss_mb": with_outage.peak_rss_mb,
        "steady_peak_rss_mb": without.peak_rss_mb,
        "spooled": with_outage.spooled,
        "spool_bytes": with_outage.spool_bytes,
        "spool_bound_bytes": bound,
        "notes": with_outage.notes,
    }
