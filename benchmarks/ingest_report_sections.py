"""The ingest benchmark's results file, after throughput: latency, scale-out and memory, each
with its method in a paragraph and a table ("" when the section did not run)."""

from __future__ import annotations

from typing import Any

from benchmarks.ingest_latency import PER_MESSAGE
from benchmarks.ingest_memory import FLAT_WITHIN

Figures = dict[str, Any]


def _n(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def latency_section(figures: Figures) -> str:
    rows = figures.get("latency")
    if not rows:
        return ""
    lines = [
        "## Latency",
        "",
        "`benchmarks/ingest_latency.py`, each run `benchmarks/alerts_latency.latency`: `Ingest` "
        "with the default rules and options in a process of its own, a paced QoS 1 publisher "
        "(one process) stamping each reading with the wall-clock time it publishes it: "
        "background devices of every type (each once per warm-up), then for the measured "
        "period also 20 fever cows and 20 racing pacemakers, once a second each, whose "
        "readings complete alert conditions; an MQTT subscriber notes when each expected "
        "alert arrives (publish → alert, in time.monotonic() of this process). Publish → stored "
        "comes from `benchmarks/stored_latency.py`: a thread polls InfluxDB for the count of "
        "readings per 10 ms of `ts` and gives the readings that appear between two answers the "
        "delay to the middle of that interval; its resolution is about half a poll (mean poll "
        "shown) plus 5 ms, and every reading published must be seen or the run fails. Its "
        "polling loads InfluxDB and a core, so the alert delays are measured in a run without "
        f"it. Single QoS 1 messages from one publisher top out near 5,500/s here (ingest, "
        f"Mosquitto and InfluxDB share the two cores), so the fast run's background devices "
        f"send arrays of {PER_MESSAGE} readings; the rate shown is the one achieved (readings "
        "over the publishing time). Targets: stored p99 < 1 s and alert p99 < 100 ms at "
        "1,000 readings/s.",
        "",
        "| run | readings/s asked | achieved | per message | readings | alerts | alert p50 / p99 "
        "/ max ms | stored p50 / p99 / max ms | mean poll ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        stored = r.get("stored")
        alerts = f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} / {r['max_ms']:.0f}"
        lines.append(
            f"| {r['label']} | {r['asked_rate']:,.0f} | {r['rate']:,.0f} | "
            f"{r['per_message']} (background) | {r['readings']:,} | {r['alerts']:,} | "
            f"{alerts}{' ‡' if r['watched'] else ''} | "
            + (
                f"{stored['p50_ms']} / {stored['p99_ms']} / {stored['max_ms']} | "
                f"{stored['mean_poll_ms']:.0f} |"
                if stored
                else "not watched | |"
            )
        )
    lines += ["", "‡ measured while the stored watcher polled InfluxDB: not the alert figure."]
    return "\n".join(lines)


def scale_section(figures: Figures) -> str:
    rows = figures.get("scale")
    if not rows:
        return ""
    readings = rows[0]["readings"]
    counts = [str(r["members"]) for r in rows]
    sizes = ", ".join(counts[:-1]) + f" and {counts[-1]}" if len(counts) > 1 else counts[0]
    lines = [
        "## Scale-out: ingests in a share group",
        "",
        f"`benchmarks/ingest_scale.py`: {readings:,} single readings (the throughput section's "
        f"single shape) drained by {sizes} `moclo ingest` processes with "
        "MOCLO_INGEST_SHARE_GROUP (an MQTT 5 shared subscription; each member its own "
        "MOCLO_INGEST_CLIENT_ID; members judge no alert rules). Each member's persistent "
        "session is created first (started, stopped once the broker logs its `$share/...` "
        "subscription), then the backlog is queued (Mosquitto deals the messages among the "
        "members' sessions in turn, offline ones included), then all members start together. "
        "Timed like the throughput section (50 ms polls): from the first member's connection "
        "in the broker's log to all N readings stored, then checked exactly once each. CPU is "
        "all members' CPU time within the interval; peak RSS is each member's VmHWM. One round "
        "per size. Two cores hold the members, Mosquitto and InfluxDB: more members than cores "
        "share the same CPU more finely, so 4 is not expected to beat 2.",
        "",
        "| members | readings/s (all) | drain s | CPU ms / 1,000 readings (all) | peak RSS sum MB "
        "| peak RSS max MB | load before |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['members']} | {_n(r['per_s'])} | {r['seconds']:.1f} | "
            f"{r['cpu_ms_per_1000']:.0f} | {r['rss_sum_mb']:.0f} | {r['rss_max_mb']:.0f} | "
            f"{r['load']:.2f} |"
        )
    return "\n".join(lines)


def memory_section(figures: Figures) -> str:
    memory = figures.get("memory")
    if not memory:
        return ""
    flat, outage = memory["flat"], memory["outage"]
    small, large = flat["runs"][0]["readings"], flat["runs"][1]["readings"]
    lines = [
        "## Memory",
        "",
        f"`benchmarks/ingest_memory.py`. Flat: one fleet, {small:,} and then {large:,} readings "
        "queued at the broker, each drained by ingest with its defaults (rules on, "
        "at-least-once, a window of 10,000 messages or 3 MiB) in a process of its own, then "
        "checked exactly in InfluxDB; peak RSS is the process's VmHWM "
        f"(target: within {FLAT_WITHIN:.0%}). Outage: `tests/faults_harness.py`'s scenario, "
        f"`moclo ingest` fed a QoS 1 stream of {outage['readings']:,} readings at "
        f"{outage['rate']:,.0f}/s with InfluxDB stopped for {outage['outage_s']:g} s mid-stream "
        "(ingest's /healthz must stay ok), against the same stream with no outage; every "
        "reading stored exactly once in both (target: memory as in the steady run, the spool "
        "within its bound).",
        "",
        "| queued readings | peak RSS MB | drain readings/s |",
        "|---:|---:|---:|",
    ]
    for run in flat["runs"]:
        lines.append(f"| {run['readings']:,} | {run['peak_rss_mb']:.0f} | {run['per_s']:,.0f} |")
    lines += [
        "",
        f"Peak RSS {large:,} / {small:,}: {flat['ratio']:.2f} (target within "
        f"{FLAT_WITHIN:.0%}: {'met' if flat['within_target'] else 'missed'}).",
        "",
        "| stream | peak RSS MB | readings spooled | spool at the outage's end | spool bound |",
        "|---|---:|---:|---:|---:|",
        f"| steady | {outage['steady_peak_rss_mb']:.0f} | 0 | | |",
        f"| InfluxDB down {outage['outage_s']:g} s | {outage['peak_rss_mb']:.0f} | "
        f"{outage['spooled']:,} | {outage['spool_bytes'] / 1e6:.1f} MB | "
        f"{outage['spool_bound_bytes'] / 1e6:,.0f} MB |",
    ]
    if outage.get("notes"):
        lines += ["", *(f"- {note}" for note in outage["notes"])]
    return "\n".join(lines)
