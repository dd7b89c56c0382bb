"""benchmarks/results/query.md from the read-side benchmark's figures."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.query_series import PATHS, VARIANTS

Figures = dict[str, Any]
QUERY_TARGET_MS = 200.0
LIVE_TARGET_MS = 1_000.0


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def _ms(value: float) -> str:
    if abs(value) < 0.05:
        return "0.0 ms"  # not "-0.0"
    return f"{value:,.1f} ms" if abs(value) < 100 else f"{value:,.0f} ms"


def _met(value: float, target: float) -> str:
    return "met" if value < target else "**not met**"


def report(figures: Figures) -> str:
    run = figures["run"]
    out = [
        "# The read side: a week of one device at 5-minute means, and the live feed",
        "",
        f"{run['date']}, on {run['machine']}; {run['servers']} on loopback. Load average "
        f"{run['loads'][0]:.2f} at the start, {run['loads'][1]:.2f} at the end (other people's "
        "test suites share this machine).",
        "",
        f"Reproduce: `.venv/bin/{run['command']}` ({run['minutes']:.1f} minutes; measured "
        f"at {run.get('revision', 'an unrecorded commit')})",
        "",
    ]
    if "load" in figures:
        out += _load_section(figures)
    if "series" in figures:
        out += _series_section(figures)
    if "live" in figures:
        out += _live_section(figures)
    if "series" in figures and "live" in figures:
        out += _dominates(figures)
    return "\n".join(out).rstrip() + "\n"


def _load_section(figures: Figures) -> list[str]:
    load, run = figures["load"], figures["run"]
    points = load["points"]
    return [
        "## 1. The stored history",
        "",
        f"{run['devices']:,} thermostats in {run['tenants']} tenants, one reading a minute for "
        f"{run['days']} days: **{points:,} readings** (each 4 fields and `seq`: "
        f"{points * 5:,} values), written as ingest writes them (`reading_line`'s schema: "
        "measurement `thermostat`, tags `device_id` and `tenant`, `seq` an integer field, "
        "nanosecond timestamps), oldest first, a few minutes of every device per request. "
        "Values follow a daily wave with per-device offsets and noise from a fixed table "
        "(benchmarks/query_data.py), so every answer below can be checked.",
        "",
        "| readings | seconds | readings/s | field values/s | writers | lines per request "
        "| line protocol | retries (cache full) | on disk after | InfluxDB restart |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {points:,} | {load['seconds']:.0f} | {load['per_s']:,.0f} | "
        f"{load['per_s'] * 5:,.0f} | {load['writers']} | {load['lines_per_batch']:,} | "
        f"{load['bytes'] / 1e9:.2f} GB | {load['retries']} | "
        f"{load['disk_bytes'] / 1e6:,.0f} MB ({load['disk_bytes'] / points:.1f} bytes/reading) "
        f"| {load['restart_s']:.1f} s |",
        "",
        f"After the load InfluxDB held exactly {load['stored']:,} readings (`count(seq)`, "
        f"{load['count_s']:.1f} s), and was then restarted (SIGTERM, start, until `/ping` "
        "answers: it replays its write-ahead log and rebuilds its in-memory index), so the "
        "queries below meet a freshly started server; then the benchmark waited until "
        "InfluxDB had finished compacting what was just written (under 5 % of a core over "
        f"5 s): {_settled(load['settle'])}. Its files "
        f"({load['disk_bytes'] / 1e6:,.0f} MB) fit in this machine's page cache many times "
        'over and were just written: "cold" below means the first time InfluxDB is asked '
        "about a device since it started, not a read from the disk"
        + (
            " (except that with `--drop-caches` the page cache was emptied before the cold "
            "pass, as here)."
            if figures["series"].get("dropped_caches")
            else "; `--drop-caches` empties the page cache before the cold pass (root only)."
        ),
        "",
    ]


def _settled(settle: dict[str, float]) -> str:
    state = "idle" if settle["quiet"] else "still busy, and the benchmark went on"
    return f"{state} after {settle['seconds']:.0f} s, {settle['cpu_s']:.0f} CPU seconds meanwhile"


def _series_section(figures: Figures) -> list[str]:
    series = figures["series"]
    rows = {(r["path"], r["variant"], r["phase"]): r for r in series["rows"]}
    raw = {(v, ph): rows[("raw", v, ph)] for v in VARIANTS for ph in ("cold", "warm")}
    out = [
        "## 2. One device, 7 days at 5-minute means",
        "",
        f"Window {series['from']} to {series['to']} (the last 7 days of the history): "
        f"**{series['buckets']:,} buckets** of 5 readings each. One field = `temp_c`; all "
        "fields = no `field` parameter, so every number field (`temp_c`, `setpoint_c`, "
        "`humidity_pct`). Paths, interleaved so that they share the machine's moods: raw = the "
        "InfluxQL statement `run_series` sends, POSTed to `/query` by httpx and parsed with "
        "orjson (InfluxDB alone); library = `parse_series_request` + `run_series` in this "
        "process (a device lookup in the series index, the statement, reshaping into a "
        "`SeriesResult`); api = `GET /api/series` of `moclo serve` in its own process, "
        "with the dashboard's parameters and an admin token (checked on every request), "
        "until the JSON is parsed. Cold: "
        f"{series['cold_devices']} devices per path and variant, each asked once, a device "
        "no path had asked about before; warm: "
        f"{series['warm_devices']} devices asked {series['warm_rounds']} times each. Every "
        "answer held every bucket, and every cold answer's means equalled the generator's "
        "(the run stops otherwise).",
        "",
        "| path | fields | phase | queries | p50 | p95 | p99 | max | p50 / raw | p99 / raw |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in ("cold", "warm"):
        for variant in VARIANTS:
            for path in PATHS:
                r = rows[(path, variant, phase)]
                out.append(
                    f"| {path} | {variant} | {phase} | {r['n']} | {_ms(r['p50'])} | "
                    f"{_ms(r['p95'])} | {_ms(r['p99'])} | {_ms(r['max'])} | "
                    f"{r['p50'] / raw[(variant, phase)]['p50']:.2f} | "
                    f"{r['p99'] / raw[(variant, phase)]['p99']:.2f} |"
                )
    api = [r for r in series["rows"] if r["path"] == "api"]
    worst = max(api, key=lambda r: r["p99"])
    out += [
        "",
        f"Target p99 < {QUERY_TARGET_MS:.0f} ms through the API: "
        f"{_met(worst['p99'], QUERY_TARGET_MS)} (the worst API p99 is "
        f"{_ms(worst['p99'])}, {worst['variant']}, {worst['phase']}; its max "
        f"{_ms(worst['max'])}).",
        "",
    ]
    extras = series["extras"]
    lookup, to_json, devices = extras["lookup"], extras["to_json"], extras["list_devices"]
    out += [
        "Pieces, timed apart: the device lookup each library call makes before its "
        f"statement (`find_device`, `SHOW TAG VALUES` on the series index) p50 "
        f"{_ms(lookup['p50'])}, p99 {_ms(lookup['p99'])} ({lookup['n']} lookups); "
        f"`SeriesResult.to_json()` of an answer p50 {_ms(to_json['p50'])}, p99 "
        f"{_ms(to_json['p99'])}. Not part of the target, but what the dashboard's fleet view "
        "asks on every (re)connect of its stream: `list_devices` (what `/api/devices` reads: "
        f"the newest reading of each of the {figures['run']['devices']:,} devices) p50 "
        f"{_ms(devices['p50'])}, max {_ms(devices['max'])} ({devices['n']} calls).",
        "",
    ]
    return out


def _live_section(figures: Figures) -> list[str]:
    live = figures["live"]
    places = {
        "mqtt": "ingest's alert on MQTT",
        "sse": "`alert` event at an SSE client, `readings=false`",
        "sse+readings": "`alert` event at an SSE client with readings, as the page asks",
        "page": "feed item in the page (`data-shown-at`)",
    }
    out = [
        "## 3. Reading → alert in the dashboard's live feed",
        "",
        "A real Mosquitto, `moclo ingest` (its defaults: at-least-once, the default rules; "
        "`MOCLO_UNREGISTERED=off`, as the simulated devices are not registered), `moclo "
        "serve`, and the dashboard (`/`, all tenants, the fleet view) open in headless "
        "Chromium (Playwright), signed in with an admin token. Background: `moclo simulate` "
        f"with "
        f"{live['background_devices']:,} thermostats, one reading a second each: "
        f"{live['background_per_s']:,.0f} readings/s stored during the run, all passing "
        f"through ingest and through `moclo serve`'s live stream, and the page's fleet table "
        f"showing {live['devices_shown']:,} devices. Then {live['alerts']} fresh cows, one every "
        f"{live['spacing_s']:g} s, each sending three readings at 40.1 °C; the third raises "
        "`fever`. Delay = from just before the third reading is published (`time.time()`) "
        "to the alert's arrival, on the same clock: at a subscriber to ingest's alert topic, "
        "at an httpx client of `/api/stream?readings=false` (alerts only), at another of "
        "`/api/stream` (alerts and the reading batches, as the page asks), and in the page "
        "(the feed item's `data-shown-at`, the browser's `Date.now()` when it inserted the "
        "item). Every alert reached all four.",
        "",
        "| arrived at | alerts | p50 | p95 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for place, label in places.items():
        s = live["delays"][place]
        out.append(
            f"| {label} | {s['n']} | {_ms(s['p50'])} | {_ms(s['p95'])} | {_ms(s['p99'])} | "
            f"{_ms(s['max'])} |"
        )
    page = live["delays"]["page"]
    tasks = live["long_tasks_ms"]
    out += [
        "",
        f"Target < {LIVE_TARGET_MS:,.0f} ms in the page: {_met(page['max'], LIVE_TARGET_MS)} "
        f"(p99 {_ms(page['p99'])}, max {_ms(page['max'])}).",
        "",
        f"What the page did during the {live['seconds']:.0f} s of alerts (its own work, timed "
        "in the page; a handler's time includes the redraws it calls; long tasks: its main "
        "thread busy ≥ 50 ms at a stretch, "
        f"{len(tasks)}" + (f", the longest {max(tasks):.0f} ms):" if tasks else "):"),
        "",
        "| work | times | per second | p50 | max | total |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for what, ms in sorted(live["page_work_ms"].items(), key=lambda kv: -sum(kv[1])):
        out.append(
            f"| `{what}` | {len(ms):,} | {len(ms) / live['seconds']:.1f} | "
            f"{_ms(percentile(ms, 50))} | {_ms(max(ms))} | {_ms(sum(ms))} |"
        )
    out.append("")
    return out


def _dominates(figures: Figures) -> list[str]:
    series, live = figures["series"], figures["live"]
    rows = {(r["path"], r["variant"], r["phase"]): r for r in series["rows"]}
    raw, library, api = (rows[(p, "all fields", "warm")]["p50"] for p in PATHS)
    extras = series["extras"]
    lookup, to_json = extras["lookup"]["p50"], extras["to_json"]["p50"]
    mqtt = live["delays"]["mqtt"]["p50"]
    hop, batches, browser = (
        live["sse_minus_mqtt"],
        live["readings_minus_sse"],
        live["page_minus_readings"],
    )
    late, busy = live["late_in_page"], live["late_meanwhile_ms"]
    return [
        "## What dominates",
        "",
        f"- The query, by medians (all fields, warm): InfluxDB's own answer {_ms(raw)} of the "
        f"API's {_ms(api)}. The library adds {_ms(library - raw)} (its device lookup "
        f"{_ms(lookup)}, the reshaping); the API adds {_ms(api - library)} more, of which "
        f"`to_json()` (formatting {series['buckets']:,} bucket times as RFC 3339) is "
        f"{_ms(to_json)}, the rest FastAPI's serialisation, the token check and the HTTP "
        "hop. The tails follow InfluxDB's and this shared machine's: the raw path has them "
        "too.",
        "- The live feed, per alert (p50 / p99 / max of the differences): "
        f"{_ms(mqtt)} (p50) from publish to ingest's alert on MQTT (ingest's batch linger, "
        "evaluation, the broker); then `moclo serve` to an alerts-only stream "
        f"{_span(hop)}; a stream that also carries the reading batches "
        f"{_span(batches)} later (there an alert may queue behind a batch of up to "
        f"{live['devices_shown']:,} readings); the page {_span(browser)} after that. Of the "
        f"{live['alerts']} alerts, {late} reached the page 50 ms or more after that stream had "
        "them"
        + (
            f"; they waited there {_ms(sum(live['late_waited_ms']))} in all, during which the "
            f"page's timed work ran {_ms(sum(busy.values()))} ({_meanwhile(busy)}) and its main "
            f"thread was stalled {_ms(sum(live['late_stalled_ms']))} (no 25 ms timer ran; "
            f"{len(live['stalls_ms'])} such stalls in the run, "
            f"{_ms(sum(live['stalls_ms']))} in all); {live['late_behind_long_task']} of them "
            "overlapped a long task"
            if late
            else ""
        )
        + ". Chromium, the servers and the load share two cores here: during the alerts, "
        f"the main thread of the page's renderer ran {live['renderer_cpu_s']:.1f} s and was "
        f"ready to run but waiting for a CPU {live['renderer_waiting_s']:.1f} s (the kernel's "
        "scheduler statistics).",
        "",
    ]


def _span(s: dict[str, float]) -> str:
    return f"{_ms(s['p50'])} / {_ms(s['p99'])} / {_ms(s['max'])}"


def _meanwhile(busy: dict[str, float]) -> str:
    """E.g. "`renderFleet` 210 ms, `event readings` 12 ms" (most first), or "nothing timed"."""
    if not busy:
        return "nothing it timed"
    return ", ".join(
        f"`{what}` {_ms(ms)}" for what, ms in sorted(busy.items(), key=lambda kv: -kv[1])
    )
