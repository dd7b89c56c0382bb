"""The alert engine's state on disk, so a restart neither forgets nor repeats an alert.

Ingest writes a snapshot every 30 s and when it stops: per device its newest reading time and
learnt interval, and per rule the lifecycle (pending, open episode, clearing) and the condition's
history (baselines, delta windows). On start it loads the snapshot, then applies the stored
alert changes newer than it (from `moclo_alerts` and from the spool), which are written with
the readings before their messages are acknowledged and so are never behind. What a crash can
lose is at most 30 s of *progress* (a pending `for` timer starts again, a baseline misses a few
readings): never an open alert, and never a second raise of one.

The file is written to a temporary name, fsynced and renamed over the old one, so a crash mid-
write leaves the previous snapshot whole. A snapshot from an incompatible version is ignored,
as is a rule's condition history when the rule's settings changed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import orjson

from devices.topics import DeviceAddress
from ingest.alerts.conditions import BaselineState, DeltaState, load_state
from ingest.alerts.engine import AlertEngine, Episode, Tracker

log = logging.getLogger("moclo.alerts")

VERSION = 1


# What a condition's saved history depends on; other settings (levels, message, severity) can
# change without throwing away a month of baseline.
_HISTORY_KEYS = {
    "delta": ("field", "window_s", "while_field"),
    "baseline": ("field", "compare", "baseline", "recent_s"),
}


def _signature(tracker: Tracker) -> str:
    rule = tracker.rule
    keys = _HISTORY_KEYS.get(rule.kind, ())
    text = repr((rule.kind, *(getattr(rule, key) for key in keys)))
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def dump(engine: AlertEngine) -> bytes:
    devices = []
    for device in engine.devices.values():
        a = device.address
        rules: dict[str, Any] = {}
        for t in [*device.trackers, *([device.absence] if device.absence else [])]:
            e = t.episode
            condition = t.condition
            rules[t.rule.name] = [
                _signature(t),
                t.pending_since,
                t.pending_count,
                t.clear_since,
                t.clear_count,
                t.changed_at,
                None
                if e is None
                else [e.alert_id, e.first_seen, e.last_seen, e.value, e.acknowledged_by],
                condition.dump() if isinstance(condition, DeltaState | BaselineState) else None,
            ]
        devices.append(
            [a.tenant, a.device_type, a.device_id, device.newest, device.interval,
             device.readings, rules]
        )  # fmt: skip
    return orjson.dumps(
        {"version": VERSION, "clocks": engine.clocks, "devices": devices},
    )


def load(engine: AlertEngine, data: bytes) -> int:
    """Fills a fresh engine from a snapshot; returns how many devices it restored."""
    snapshot = orjson.loads(data)
    if snapshot.get("version") != VERSION:
        log.warning("alert state snapshot has version %r, not %d: ignored",
                    snapshot.get("version"), VERSION)  # fmt: skip
        return 0
    engine.clocks = {tenant: (int(c[0]), int(c[1])) for tenant, c in snapshot["clocks"].items()}
    for tenant, device_type, device_id, newest, interval, readings, rules in snapshot["devices"]:
        device = engine.device(DeviceAddress(tenant, device_type, device_id))
        device.newest, device.interval, device.readings = newest, interval, readings
        for t in [*device.trackers, *([device.absence] if device.absence else [])]:
            saved = rules.get(t.rule.name)
            if saved is None:
                continue
            signature, t.pending_since, t.pending_count, t.clear_since, t.clear_count = saved[:5]
            t.changed_at = saved[5]
            if saved[6] is not None:
                t.episode = Episode(*saved[6])
            if signature == _signature(t) and saved[7] is not None:
                t.condition = load_state(t.rule, saved[7])
            elif signature != _signature(t):
                # What the history measures changed: it may mean something else now.
                t.pending_since, t.pending_count = -1, 0
    engine.reindex()
    return len(snapshot["devices"])


def write(path: Path, data: bytes) -> None:
    """Replaces the snapshot at `path` atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with temporary.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
