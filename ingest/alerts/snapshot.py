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

import functools
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson

from devices.rfc3339 import now_compact
from devices.rules import Rule
from devices.topics import DeviceAddress
from ingest.alerts.baselines import BaselineState
from ingest.alerts.conditions import DeltaState, load_state
from ingest.alerts.engine import AlertEngine
from ingest.alerts.lifecycle import DeviceState, Episode
from ingest.alerts.place_conditions import ArrivalState
from ingest.private import FILE_MODE, create_private, private_folder

log = logging.getLogger("moclo.alerts")

VERSION = 1


# What a condition's saved history depends on; other settings (levels, message, severity) can
# change without throwing away a month of baseline.
_HISTORY_KEYS = {
    "delta": ("field", "window_s", "while_field"),
    "baseline": ("field", "compare", "baseline", "recent_s"),
}


@functools.lru_cache(maxsize=4096)
def _signature(rule: Rule) -> str:
    keys = _HISTORY_KEYS.get(rule.kind, ())
    text = repr((rule.kind, *(getattr(rule, key) for key in keys)))
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _entry(device: DeviceState) -> list[Any]:
    a = device.address
    rules: dict[str, Any] = {}
    for t in [*device.trackers, *([device.absence] if device.absence else [])]:
        e = t.episode
        condition = t.condition
        rules[t.rule.name] = [
            _signature(t.rule),
            t.pending_since,
            t.pending_count,
            t.clear_since,
            t.clear_count,
            t.changed_at,
            None if e is None else [e.alert_id, e.first_seen, e.last_seen, e.value,
                                    e.acknowledged_by],
            condition.dump()
            if isinstance(condition, DeltaState | BaselineState | ArrivalState)
            else None,
        ]  # fmt: skip
    return [a.tenant, a.device_type, a.device_id, device.newest, device.interval,
            device.readings, rules]  # fmt: skip


class SnapshotJob:
    """Builds a snapshot a slice of devices at a time, so ingest can keep consuming between
    slices (a whole fleet at once would stall it for a second or more).

    Each device is captured between two batches, whole; devices differ in when, which is fine:
    a device's state depends only on its own readings, and restoring applies stored changes
    per rule by time. Devices that appear after the job began wait for the next snapshot.
    """

    def __init__(self, engine: AlertEngine, devices: list[DeviceState] | None = None) -> None:
        self._engine = engine
        # `devices`: a part of the engine's (one partition's, on the distributed engine)
        self._devices = list(engine.devices.values()) if devices is None else devices
        self._next = 0
        self._parts: list[bytes] = []

    @property
    def done(self) -> bool:
        return self._next >= len(self._devices)

    def step(self, budget_s: float) -> bool:
        """Captures devices for about `budget_s`; True once every device is captured."""
        deadline = time.monotonic() + budget_s
        while not self.done:
            chunk = self._devices[self._next : self._next + 100]
            self._next += len(chunk)
            self._parts.append(orjson.dumps([_entry(d) for d in chunk])[1:-1])
            if time.monotonic() >= deadline:
                break
        return self.done

    def result(self) -> bytes:
        assert self.done
        head = orjson.dumps({"version": VERSION, "clocks": self._engine.clocks})[:-1]
        return head + b',"devices":[' + b",".join(p for p in self._parts if p) + b"]}"


def dump(engine: AlertEngine) -> bytes:
    job = SnapshotJob(engine)
    job.step(budget_s=float("inf"))
    return job.result()


class SnapshotInvalid(ValueError):
    """The file is not a snapshot this version could have written (valid JSON of the wrong
    shape, a hand edit, a disk that lost part of it): set it aside and restore from the store."""


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise SnapshotInvalid(what)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ints(values: list[Any], what: str) -> None:
    _check(all(_is_int(v) for v in values), f"{what} must be whole numbers")


def _check_rule(name: object, saved: object) -> None:
    _check(isinstance(name, str) and isinstance(saved, list) and len(saved) == 8,
           "each rule's state must be a list of 8 under its name")  # fmt: skip
    assert isinstance(saved, list)
    _check(isinstance(saved[0], str), "a rule's signature must be a string")
    _ints(saved[1:6], "a rule's timers and counts")
    episode = saved[6]
    if episode is not None:
        _check(
            isinstance(episode, list)
            and len(episode) == 5
            and isinstance(episode[0], str)
            and _is_int(episode[1])
            and _is_int(episode[2])
            and isinstance(episode[3], int | float)
            and not isinstance(episode[3], bool)
            and isinstance(episode[4], str),
            "an episode must be [alert id, first seen, last seen, value, acknowledged by]",
        )
    _check(saved[7] is None or isinstance(saved[7], list), "a condition's history is a list")


def _check_shape(snapshot: dict[str, Any]) -> None:
    """Raises SnapshotInvalid unless every value has the type `_entry` and `result` write, so
    that nothing of the wrong type reaches the engine and fails later, mid-ingest."""
    clocks, devices = snapshot.get("clocks"), snapshot.get("devices")
    _check(isinstance(clocks, dict), "clocks must be an object")
    _check(isinstance(devices, list), "devices must be a list")
    assert isinstance(clocks, dict) and isinstance(devices, list)
    for clock in clocks.values():
        _check(isinstance(clock, list) and len(clock) == 2, "a clock must be [seen, wall]")
        _ints(clock, "a clock")
    for entry in devices:
        _check(isinstance(entry, list) and len(entry) == 7, "a device must be a list of 7")
        _check(all(isinstance(v, str) for v in entry[:3]), "a device's address must be strings")
        _ints(entry[3:6], "a device's newest time, interval and readings")
        _check(isinstance(entry[6], dict), "a device's rules must be an object")
        for name, saved in entry[6].items():
            _check_rule(name, saved)


def load(engine: AlertEngine, data: bytes) -> int:
    """Fills a fresh engine from a snapshot; returns how many devices it restored. Raises
    SnapshotInvalid for anything this version could not have written."""
    try:
        snapshot = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SnapshotInvalid(f"not JSON ({exc})") from None
    _check(isinstance(snapshot, dict), f"a JSON {type(snapshot).__name__}, not an object")
    _check(_is_int(snapshot.get("version")), "no version number: not a snapshot moclo wrote")
    if snapshot.get("version") != VERSION:
        log.warning("alert state snapshot has version %r, not %d: ignored",
                    snapshot.get("version"), VERSION)  # fmt: skip
        return 0
    _check_shape(snapshot)
    engine.clocks = {tenant: (c[0], c[1]) for tenant, c in snapshot["clocks"].items()}
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
            if signature == _signature(t.rule) and saved[7] is not None:
                try:
                    t.condition = load_state(t.rule, saved[7])
                except (TypeError, ValueError, IndexError) as exc:
                    raise SnapshotInvalid(f"rule {t.rule.name}'s history: {exc}") from None
            elif signature != _signature(t.rule):
                # What the history measures changed: it may mean something else now.
                t.pending_since, t.pending_count = -1, 0
    engine.reindex()
    return len(snapshot["devices"])


def write(path: Path, data: bytes) -> None:
    """Replaces the snapshot at `path` atomically (temporary file, fsync, rename)."""
    private_folder(path.parent)
    temporary = path.with_suffix(".tmp")
    with os.fdopen(create_private(temporary, truncate=True), "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def set_aside(path: Path) -> Path:
    """Renames an unusable snapshot to `<name>.bad-<UTC stamp>` (0600: it holds alert state)
    so that someone can look at it, and the next snapshot does not overwrite it."""
    stamp = now_compact()
    aside = path.with_name(f"{path.name}.bad-{stamp}")
    n = 1
    while aside.exists():  # two bad starts within a second
        n += 1
        aside = path.with_name(f"{path.name}.bad-{stamp}-{n}")
    os.replace(path, aside)
    os.chmod(aside, FILE_MODE)
    return aside


def read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
