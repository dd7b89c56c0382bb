"""The alert benchmark's figures as benchmarks/results/alerts.md: tables, and the sentences
that read them (each computed from the figures, so they cannot go stale)."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.alerts_throughput import SHARES, WINDOW

# The figures `report` reads, as `main` collects them (and writes them with --json):
#   run: date, machine, servers, loads [start, end], command, minutes, readings, seed, rate,
#        warmup, duration, alerting
#   throughput: one dict per round (alerts_throughput.throughput_round)
#   latency: one dict per variant (alerts_latency.latency), plus "asked_every_s"
#   memory: one dict per row (alerts_memory.MemoryRow)
Figures = dict[str, Any]


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def throughput_section(run: dict[str, Any], rounds: list[dict[str, Any]]) -> str:
    on = [r["per_s"] for r in rounds if r["rules"]]
    off = [r["per_s"] for r in rounds if not r["rules"]]
    ratios = [a / b for a, b in zip(on, off, strict=True)]
    ratio = statistics.median(ratios)
    unconfirmed = sum(r["unconfirmed"] for r in rounds)
    table = [
        "| round | rules | readings/s | seconds | alert changes stored | unconfirmed-notification "
        "warnings | peak RSS | load |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(rounds):
        table.append(
            f"| {i // 2 + 1} | {'on' if r['rules'] else 'off'} | {r['per_s']:,.0f} | "
            f"{r['seconds']:.2f} | {r['alert_changes']} | {r['unconfirmed']} | "
            f"{r['peak_rss_mb']:.0f} MB | {r['load']:.2f} |"
        )
    changes = sorted({r["alert_changes"] for r in rounds if r["rules"]})
    same = (
        f"every rules-on round stored {changes[0]}"
        if len(changes) == 1
        else f"rules-on rounds stored {', '.join(map(str, changes))}"
    )
    by_rule = ", ".join(f"`{k}` {v}" for k, v in sorted(rounds[0]["by_rule"].items()))
    mixed = ", ".join(f"{t} {s:.0%}" for t, s in SHARES.items())
    return f"""## 1. Ingest throughput, rules on against rules off

{run["readings"]:,} single-reading QoS 1 messages wait at the broker for ingest's persistent \
session; ingest then starts in its own process and is timed until it has handled all of them. \
Readings: every device type ({mixed}), from the simulators with seed {run["seed"]}, two days of \
reading time ending now, one reading per device every 10 min (blood pressure twice a day), a \
random episode about once a day per device and one device in ten offline for 3 h. Rules on = \
every type's default rules; off = `IngestOptions(alert_rules=False)`. Every round runs with \
IngestOptions' defaults, so ingest's window (MQTT Receive Maximum, {WINDOW:,}) is smaller than \
the backlog, and the broker sends the rest only as ingest acknowledges. Every round: a fresh \
database and session, and InfluxDB then holds exactly {run["readings"]:,} readings (no loss, \
no duplicates, no rejections) or the benchmark stops. "Unconfirmed-notification warnings" \
counts ingest's warning "the broker did not confirm N alert notifications within 10 s": each \
is a batch that waited 10 s for its notifications' PUBACKs (expected: 0).

{chr(10).join(table)}

What evaluating the rules costs: rules on median {statistics.median(on):,.0f} readings/s \
(range {min(on):,.0f}–{max(on):,.0f}), off median {statistics.median(off):,.0f} (range \
{min(off):,.0f}–{max(off):,.0f}); ratio on/off per round \
{", ".join(f"{r:.2f}" for r in ratios)}, median **{ratio:.2f}** (target ≥ 0.85: \
{_met(ratio >= 0.85)}). Unconfirmed-notification warnings: **{unconfirmed}** in \
{len(rounds)} rounds (expected 0). Alert changes: {same}; by rule: {by_rule}.

Before 4e9b782 the same rounds stalled (258 readings/s with rules on, 10 s per batch that \
changed an alert), fixed by giving alert notifications their own MQTT connection \
(`ingest/announce.py`).
"""


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _ms(value: float) -> str:
    return f"{value:,.1f} ms"


def _gc_reading(lat: list[dict[str, Any]]) -> str:
    """What ingest's garbage collections did to the alerts in flight, row by row."""
    parts = []
    for i, r in enumerate(lat, 1):
        pauses = r["gc_pauses"]
        if not pauses:
            parts.append(f"row {i}: no collection of 5 ms or more")
            continue
        longest = max(pauses, key=lambda p: p["ms"])
        hit = [p for p in pauses if p["alerts_in_flight"]]
        worst = max((p["their_max_ms"] for p in hit), default=0.0)
        slowest_in_gc = bool(hit) and abs(worst - r["max_ms"]) < 0.01
        parts.append(
            f"row {i}: {_n(len(pauses), 'collection')} of 5 ms or more, the longest "
            f"{longest['ms']:.0f} ms (generation {longest['generation']}); "
            + (
                f"{_n(sum(p['alerts_in_flight'] for p in hit), 'expected alert')} in flight "
                f"meanwhile, the slowest {worst:.1f} ms"
                + (", the slowest of the run" if slowest_in_gc else "")
                if hit
                else "no expected alert in flight meanwhile"
            )
        )
    return (
        "Garbage collection, which pauses ingest's event loop when Python chooses, not between "
        "batches: " + "; ".join(parts) + "."
    )


def latency_section(run: dict[str, Any], lat: list[dict[str, Any]]) -> str:
    table = [
        "| linger_s | snapshot_every_s | readings | readings/s | alerts | p50 | p99 | max | "
        "over 100 ms | snapshots in the run | longest GC pause in ingest | other alerts |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in lat:
        longest_gc = max(r["gc_pauses"], key=lambda p: p["ms"], default=None)
        gc_text = "–" if longest_gc is None else f"{longest_gc['ms']:.0f} ms"
        table.append(
            f"| {r['linger_s']:g} | {r['snapshot_every_s']:g} | {r['readings']:,} | "
            f"{r['rate']:,.0f} | {r['alerts']} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | "
            f"{_ms(r['max_ms'])} | {r['over_100ms']} | {len(r['snapshots'])} | {gc_text} | "
            f"{r['unexpected']} |"
        )
    snaps = [
        "| linger_s | snapshot_every_s | began (s into the run) | captured in | slices | "
        "longest slice | then written in | expected alerts in flight | their max delay |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in lat:
        for s in r["snapshots"]:
            snaps.append(
                f"| {r['linger_s']:g} | {r['snapshot_every_s']:g} | {s['at_s']:.1f} | "
                f"{_ms(s['capture_ms'])} | {s['slices']} | {_ms(s['longest_slice_ms'])} | "
                f"{_ms(s['write_ms'])} | {s['alerts_in_flight']} | {_ms(s['their_max_ms'])} |"
            )
    lowered = [r for r in lat if r["snapshot_every_s"] != r["asked_every_s"]]
    lowered_note = (
        " In this run, shorter than the snapshot period, `snapshot_every_s` was lowered from "
        f"{lowered[0]['asked_every_s']:g} to {lowered[0]['snapshot_every_s']:g} where the "
        "columns say so, so that those runs contain a snapshot."
        if lowered
        else ""
    )
    default, old_linger, no_snapshot = lat[0], lat[1], lat[2]
    in_flight = default["snapshots"]
    snapshot_reading = (
        "In the default run: "
        + "; ".join(
            f"a snapshot captured in {_n(s['slices'], 'slice')} over "
            f"{s['capture_ms']:,.0f} ms (the longest {s['longest_slice_ms']:.1f} ms), then "
            f"written on a worker thread in "
            f"{s['write_ms']:,.0f} ms, "
            + (
                f"with {s['alerts_in_flight']} expected alerts in flight that took at most "
                f"{s['their_max_ms']:.1f} ms"
                if s["alerts_in_flight"]
                else "with no expected alert in flight"
            )
            for s in in_flight
        )
        + f"; the p99 over the whole run was {default['p99_ms']:.1f} ms"
        if in_flight
        else "The default run contained no snapshot"
    )
    return f"""## 2. Publish → alert latency

{default["readings"]:,} readings at {run["rate"]:,.0f}/s: background devices of every device type \
(each type's example reading, every {run["warmup"]:g} s each; the first {run["warmup"]:g} s are \
warm-up, so every background device is known), and for {run["duration"]:g} s \
{2 * run["alerting"]} alerting devices at one reading a second: {run["alerting"]} cows (3 \
readings at 40 °C raise `fever`, 3 at 38.6 resolve it) and {run["alerting"]} pacemakers (160 bpm \
raises `tachycardia`, 3 readings at 70 resolve it). Delay = from just before publishing the \
reading that completed the condition to the alert's arrival at a subscriber on \
`{{prefix}}/+/alerts/+` (matched on device id and the alert's `ts`); every expected alert \
arrived. Ingest runs with the default rules in its own process; the first row is \
IngestOptions' defaults, the second the old default linger (0.1 s), the third no periodic \
snapshot during the run. Ingest's first snapshot comes `snapshot_every_s` after it starts, so \
each {run["warmup"] + run["duration"]:g} s run with `snapshot_every_s` \
{default["snapshot_every_s"]:g} contains at least one (the second table says when; the run \
fails if it does not).{lowered_note}

{chr(10).join(table)}

Target p99 < 100 ms with the defaults: {_met(default["p99_ms"] < 100)} \
(p99 {default["p99_ms"]:.1f} ms, max {default["max_ms"]:.1f} ms).

Linger (rows 1 and 2): p50 {default["p50_ms"]:.1f} ms with 0.02 s against \
{old_linger["p50_ms"]:.1f} ms with 0.1 s, p99 {default["p99_ms"]:.1f} against \
{old_linger["p99_ms"]:.1f} ms. At this rate a batch never fills (2,000 messages), so every \
batch waits the whole linger before it is handled, which adds up to `linger_s` to each alert.

Snapshot (rows 1 and 3): p99 {default["p99_ms"]:.1f} ms with a snapshot in the run against \
{no_snapshot["p99_ms"]:.1f} ms without, max {default["max_ms"]:.1f} against \
{no_snapshot["max_ms"]:.1f} ms. Ingest now captures the snapshot a slice of devices per \
consumer turn (`SnapshotJob.step`, about 10 ms of devices per turn while messages flow) and \
writes it on a worker thread while consuming goes on, so a batch waits at most one slice. \
Each snapshot during the runs, and the expected alerts that were in flight (published, not yet \
arrived) while it was captured or written:

{chr(10).join(snaps)}

{snapshot_reading}.

{_gc_reading(lat)}
"""


def memory_section(mem: list[dict[str, Any]]) -> str:
    table = [
        "| device type | devices | readings fed | checkpoints | bytes/device | open alerts | "
        "snapshot bytes/device | dump | load |",
        "|---|---:|---:|---|---|---|---:|---:|---:|",
    ]
    for m in mem:
        table.append(
            f"| {m['label']} | {m['devices']:,} | {m['readings']:,} | "
            f"{' / '.join(m['bytes_at'])} | "
            f"{' / '.join(f'{v:,.0f}' for v in m['bytes_at'].values())} | "
            f"{' / '.join(map(str, m['open_at'].values()))} | {m['snapshot_bytes']:,.0f} | "
            f"{m['dump_ms']:,.0f} ms | {m['load_ms']:,.0f} ms |"
        )
    fleet = mem[:-1]
    devices = sum(m["devices"] for m in fleet)
    total = sum(list(m["bytes_at"].values())[-1] * m["devices"] for m in fleet)
    snap = sum(m["snapshot_bytes"] * m["devices"] for m in fleet)
    dump_ms, load_ms = sum(m["dump_ms"] for m in fleet), sum(m["load_ms"] for m in fleet)
    return f"""## 3. Alert engine memory per device

One `AlertEngine` per type with the default rules, fed in this process one reading per device \
per hour of reading time, so every baseline slot fills (the reading rate does not change what \
a device keeps, except the samples in a delta window); values replayed from 64 simulated \
devices per type with a random episode about every two days. Bytes = what tracemalloc counts \
as still held after `gc.collect()` (devices, rule state, open episodes, indexes, ids) per \
device, at each checkpoint; it moves only with the number of open episodes. The last row is a \
delta window at its cap: thermostats heating for hours without warming, a reading a minute, so \
the 1 h window keeps its 34 samples. Snapshot = the alert state ingest saves every 30 s: \
ingest captures it in slices between batches and writes it on a worker thread while \
consuming goes on; `snapshot.dump` here makes the same capture in one go, timed with tracing \
off, so "dump" is the work those slices add up to, not a pause. Load = `snapshot.load` into a \
fresh engine, which ingest does once, when it starts.

{chr(10).join(table)}

All types together (first {len(fleet)} rows): {devices:,} devices, \
{total / 1e6:,.1f} MB of alert state ({total / devices:,.0f} bytes/device); snapshot \
{snap / 1e6:,.1f} MB ({snap / devices:,.0f} bytes/device), dumped in {dump_ms:,.0f} ms and \
loaded in {load_ms:,.0f} ms.
"""


def report(figures: Figures) -> str:
    run = figures["run"]
    loads = run["loads"]
    return f"""# Alert rules: throughput cost, latency, memory

{run["date"]}, on {run["machine"]}; {run["servers"]} on loopback. Load average \
{loads[0]:.2f} at the start, {loads[1]:.2f} at the end (other people's test suites share \
this machine).

Reproduce: `.venv/bin/{run["command"]}` ({run["minutes"]:.1f} minutes)

{throughput_section(run, figures["throughput"])}
{latency_section(run, figures["latency"])}
{memory_section(figures["memory"])}"""
