"""The ingest benchmark's results file: throughput as medians over rounds, per message shape,
then the latency, scale-out and memory sections (ingest_report_sections.py)."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.ingest_contenders import CONTENDERS
from benchmarks.ingest_raw import LINES_PER_BODY, WRITERS
from benchmarks.ingest_report_sections import latency_section, memory_section, scale_section
from benchmarks.ingest_targets import targets_section

Figures = dict[str, Any]
COLUMNS = ("per_s", "seconds", "cpu_s", "cpu_ms_per_1000", "peak_rss_mb", "start_to_done_s")
ROUGH_S = 1.0  # a drain shorter than this is within a few polls of the timer's resolution
BASELINE_LABEL = "moclo ingest at the --baseline commit"
RAW_LABEL = f"InfluxDB raw: ingest's lines, {LINES_PER_BODY:,} a POST, {WRITERS} writers"
TARGET_BATCHED_OF_RAW = 0.6  # issue 8: batched ingest at least 0.6× InfluxDB's raw rate


def _label(key: str) -> str:
    if key in CONTENDERS:
        return f"({key}) {CONTENDERS[key].label}"
    # A report rendered later from --json knows the baseline only by its key.
    return f"({key}) {BASELINE_LABEL if key == 'p' else RAW_LABEL}"


def medians(figures: Figures) -> dict[str, dict[str, dict[str, float | None]]]:
    """shape → contender → column → the median over rounds (None if never measured)."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for row in figures["rounds"]:
        out.setdefault(row["shape"], {}).setdefault(row["contender"], {})
    for shape, by_contender in out.items():
        for key in by_contender:
            rows = [r for r in figures["rounds"] if r["shape"] == shape and r["contender"] == key]
            for column in COLUMNS:
                values = [r[column] for r in rows if r[column] is not None]
                by_contender[key][column] = statistics.median(values) if values else None
    return out


def _n(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}"


def _shape_table(shape: str, rows: dict[str, dict[str, float | None]], figures: Figures) -> str:
    rounds = [r for r in figures["rounds"] if r["shape"] == shape]
    readings = rounds[0]["readings"]
    # The writers all drain the same messages (raw's rows count its POSTs instead).
    drained = [r for r in rounds if r["contender"] != "raw"] or rounds
    per_message = drained[0]["readings"] // drained[0]["messages"]
    lines = [
        f"### {shape}: {readings:,} readings, {per_message} per message",
        "",
        "| writer | readings/s | CPU s (process) | CPU ms / 1,000 readings | peak RSS MB "
        "| start → all stored, s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, m in sorted(rows.items()):
        rough = " †" if key != "raw" and (m["seconds"] or ROUGH_S) < ROUGH_S else ""
        lines.append(
            f"| {_label(key)} | {_n(m['per_s'])}{rough} | {_n(m['cpu_s'], 1)} "
            f"| {_n(m['cpu_ms_per_1000'], 0)} | {_n(m['peak_rss_mb'])} "
            f"| {_n(m['start_to_done_s'], 1)} |"
        )
    if any(k != "raw" and (m["seconds"] or ROUGH_S) < ROUGH_S for k, m in rows.items()):
        lines += ["", f"† drained in under {ROUGH_S:g} s: with ±0.1 s of timer, a rough figure."]
    c = rows.get("c")
    if c:
        lines += ["", "| moclo ingest (c) against | readings/s | CPU per reading | peak RSS |"]
        lines.append("|---|---:|---:|---:|")
        for key in sorted(k for k in rows if k != "c"):
            o = rows[key]
            lines.append(
                f"| ({key}) | c/{key} = {_ratio(c['per_s'], o['per_s'])} "
                f"| {_ratio(c['cpu_ms_per_1000'], o['cpu_ms_per_1000'])} "
                f"| {_ratio(c['peak_rss_mb'], o['peak_rss_mb'])} |"
            )
    if c:
        lines += _per_round(rounds, rows)
    if c and "raw" in rows:
        target = f" (target ≥ {TARGET_BATCHED_OF_RAW:g})" if "batched" in shape else ""
        lines += [
            "",
            f"moclo ingest reaches c/raw = {_ratio(c['per_s'], rows['raw']['per_s'])} of "
            f"InfluxDB's raw rate for these readings{target}.",
        ]
    return "\n".join(lines)


def _per_round(rounds: list[dict[str, Any]], rows: dict[str, Any]) -> list[str]:
    """c's readings/s over each other writer's, round by round: a target "in every round" is
    read here, not from the medians."""
    out = []
    for key in sorted(k for k in rows if k not in ("c", "raw")):
        ratios = []
        for n in sorted({r["round"] for r in rounds}):
            c = next(
                (r["per_s"] for r in rounds if r["round"] == n and r["contender"] == "c"), None
            )
            o = next(
                (r["per_s"] for r in rounds if r["round"] == n and r["contender"] == key), None
            )
            ratios.append(_ratio(c, o))
        out.append(f"- c/{key} round by round: {', '.join(ratios)}")
    return ["", *out] if out else []


def _profile_section(figures: Figures) -> str:
    profile = figures.get("profile") or ""
    if not profile:
        return ""
    return (
        "## Profile\n\nWhere moclo ingest's CPU goes, shape by shape, from a run of its own under "
        "py-spy (`benchmarks/ingest_profile.py`; sampling slows it, so its rates are not the "
        "ones above), on the same commit:\n\n" + profile.rstrip()
    )


def report(figures: Figures) -> str:
    run = figures["run"]
    loads = [r["load"] for r in figures["rounds"]] or [run["loads"][0]]
    tables = "\n\n".join(
        _shape_table(shape, rows, figures) for shape, rows in medians(figures).items()
    )
    minutes = ", ".join(f"{k} {v:.1f}" for k, v in run.get("section_minutes", {}).items())
    sections = "".join(
        f"\n\n{text}"
        for text in (
            latency_section(figures),
            scale_section(figures),
            memory_section(figures),
            _profile_section(figures),
        )
        if text
    )
    install = (
        f" Node-RED was installed from npm for this run in {run['node_red_install_s']:.0f} s."
        if run.get("node_red_install_s")
        else ""
    )
    header = f"""# Ingest: throughput against other writers and InfluxDB, latency, scale-out, memory

    {run["command"]}

{run["date"]}, commit {run["commit"]}; {run["machine"]}. {run["servers"]}; {run["node"]}.
Rounds: {run["rounds_asked"]}, medians shown; seed {run["seed"]}. Load average (1 min) before
each drain: {min(loads):.2f} to {max(loads):.2f} (the machine is shared: another engineer may
have been profiling meanwhile). The run took {run["minutes"]:.0f} minutes ({minutes}).{install}"""
    if not figures["rounds"]:
        return header + sections + "\n"
    targets = targets_section(figures)
    return f"""{header}

{targets}

## Throughput

Each writer drains the same backlog: {run["readings"]:,} readings of all device types one per
message, and {run.get("batched_readings", run["readings"]):,} in arrays of {run["batch"]}
(`benchmarks/ingest_data.py`); and, if cows are named, {run.get("cows", 0):,} cow trackers alone
the same two ways, moclo ingest starting from the baselines learnt on their first day
(`benchmarks/ingest_cows.py`); queued at Mosquitto for its persistent session (QoS 1) before it
starts, each writer with its own topic prefix and InfluxDB database; every drain ends with
InfluxDB holding exactly those readings, once each, with ingest's measurement, tags and field
names, or the run fails. Timing is the same for every writer: the harness polls every 50 ms
and times from the first poll that finds the writer connected in the broker's log (start-up
before that, seconds for Node-RED, is left out) to the first that finds all N readings stored
(InfluxDB's count; for (a), its report of the Nth message); readings/s = N / that interval, to
about ±0.1 s. "CPU ms / 1,000 readings" is the writer's CPU time (/proc, with children) within
the interval; "CPU s (process)" is all of it, start-up included; peak RSS is VmHWM, read before
the writer is stopped. "Start → all stored" includes start-up. See
`benchmarks/ingest_round.py`. "raw" is InfluxDB alone (`benchmarks/ingest_raw.py`): the same
readings formatted beforehand by ingest's own decoder and line formatting, POSTed to /write in
bodies of {LINES_PER_BODY:,} lines by {WRITERS} concurrent writer threads into a fresh
database, timed in-process from the first request to the last answer, then checked exactly as
the writers are; its CPU and memory are InfluxDB's, not shown.

{tables}

What the writers promise differs, and so does what they do:

- (a) counts messages; paho acknowledges each when its callback returns. A ceiling for paho.
- (b) acknowledges automatically, before the reading is stored: a crash loses what it held.
  No validation, no rejections, no alerts; its integer fields come from its own copy of the
  schema. 5,000-line batches, one write in flight while the next batch fills.
- (c) validates every reading, judges the alert rules, and acknowledges a message only after
  its readings are stored (at-least-once); batches of up to 2,000 messages or 1 MiB. Its window
  is 10,000 messages or 3 MiB of payload waiting, whichever comes first: with 50 readings a
  message (5.3 KB), about 600 messages (30,000 readings), hence its larger peak RSS there.
- (d) mqtt.js acknowledges on arrival; the influx batch node starts each write without waiting
  for the last (no back-pressure); with an InfluxDB 1.x config it writes every number as a float
  (its README says so), so `seq` and the integer fields are floats in its database.{sections}
"""
