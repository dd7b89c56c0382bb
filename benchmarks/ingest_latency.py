"""The ingest benchmark's latency section: how long a reading takes from its publication to
InfluxDB, and an alert from the reading that completes its condition to its notification, at a
fixed rate.

Each run is `benchmarks/alerts_latency.latency`: ingest in a process of its own with the default
rules and options, a paced QoS 1 publisher of background devices of every type plus alerting
devices (fever cows, racing pacemakers) after a warm-up, an alert subscriber. Three runs, each
on its own topic prefix and database:

1. alerts at 1,000 readings/s, without the stored watcher (its polling loads InfluxDB and a
   core, so alert delays of a watched run are not comparable);
2. publish → stored at 1,000 readings/s, with the watcher (`benchmarks/stored_latency.py`:
   every reading must be seen; resolution about half a poll plus 5 ms);
3. publish → stored at 10,000 readings/s, the background devices sending arrays of PER_MESSAGE
   readings (one publisher process manages only about 5,500 QoS 1 messages/s here, with ingest,
   Mosquitto and InfluxDB on the same two cores). The rate reported is the one achieved: all
   readings over the publishing time.

The warm-up sets how many background devices exist (messages/s × warm-up): kept under ingest's
new-device burst per tenant (`Limits.new_devices_burst`), or readings would be rejected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.alerts_latency import LiveLoad, latency
from benchmarks.alerts_stack import Servers

PER_MESSAGE = 10  # readings per background message in the 10,000/s run


@dataclass(frozen=True, slots=True)
class Run:
    name: str
    load: LiveLoad
    watch_stored: bool
    label: str


def runs(*, short: bool) -> list[Run]:
    if short:  # a few seconds each: every reading and alert must still be seen
        slow = LiveLoad(rate=200, duration_s=3, warmup_s=1, alerting=2, snapshot_every_s=3600)
        fast = LiveLoad(
            rate=1_000, duration_s=3, warmup_s=1, alerting=2, per_message=PER_MESSAGE,
            snapshot_every_s=3600,
        )  # fmt: skip
    else:
        slow = LiveLoad(rate=1_000, duration_s=30, warmup_s=10)
        fast = LiveLoad(rate=10_000, duration_s=30, warmup_s=5, per_message=PER_MESSAGE)
    return [
        Run("lat-alerts", slow, False, "alerts, no watcher"),
        Run("lat-stored", slow, True, "stored, watched"),
        Run("lat-stored-fast", fast, True, f"stored, watched, arrays of {PER_MESSAGE}"),
    ]


def measure(
    servers: Servers, *, short: bool, progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    rows = []
    for run in runs(short=short):
        load = run.load
        progress(
            f"  latency: {run.label} at {load.rate:,.0f} readings/s for "
            f"{load.warmup_s:g} + {load.duration_s:g} s…"
        )
        result = latency(servers, load, run.name, watch_stored=run.watch_stored)
        stored = result["stored"]
        progress(
            f"    {result['rate']:,.0f} readings/s achieved; alerts p50/p99 "
            f"{result['p50_ms']:.0f}/{result['p99_ms']:.0f} ms"
            + (f"; stored p50/p99 {stored['p50_ms']}/{stored['p99_ms']} ms" if stored else "")
        )
        rows.append(
            {
                "run": run.name,
                "label": run.label,
                "asked_rate": load.rate,
                "per_message": load.per_message,
                "duration_s": load.duration_s,
                "warmup_s": load.warmup_s,
                "watched": run.watch_stored,
            }
            | {k: v for k, v in result.items() if k not in ("snapshots", "gc_pauses")}
            | {"snapshots": len(result["snapshots"]), "gc_pauses": len(result["gc_pauses"])}
        )
    return rows
