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

The file is one JSON document with a line per device (the header, `{"version":1,"clocks":{…},
"devices":[`, on the first line, `]}` on the last), so that ingest restores it a line at a time:
parsed whole, 3,000 cows with a day of baselines (5.7 MB of JSON) took 28 MB of Python objects
at once on top of the engine's 18 MB, and the process's resident memory kept the difference
(`benchmarks/ingest_cows.py`'s herd: peak 104 → 65 MB for ingest's imports and the restore).
A snapshot on one line, as versions before this one wrote it, is still read, whole.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from devices.rfc3339 import now_compact
from devices.rules import Rule
from devices.topics import DeviceAddress
from ingest.alerts.baselines import BaselineState
from ingest.alerts.conditions import ConditionState, DeltaState, load_state
from ingest.alerts.engine import AlertEngine
from ingest.alerts.lifecycle import DeviceState, Episode
from ingest.alerts.place_conditions import ArrivalState
from ingest.private import FILE_MODE, create_private, private_folder

log = logging.getLogger("moclo.alerts")

VERSION = 1
# The ends of the header line and of the last line (see the module docstring).
_HEAD_END = b',"devices":['
_TAIL = b"]}"


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
            # A line per device: `load_file` reads one at a time (orjson writes no newline).
            self._parts.append(b",\n".join(orjson.dumps(_entry(d)) for d in chunk))
            if time.monotonic() >= deadline:
                break
        return self.done

    def result(self) -> bytes:
        return b"".join(self.chunks())

    def chunks(self) -> list[bytes]:
        """The snapshot in pieces, for `write` without a joined copy (a herd's is megabytes)."""
        assert self.done
        head = orjson.dumps({"version": VERSION, "clocks": self._engine.clocks})[:-1]
        parts = [p for p in self._parts if p]
        body = [piece for p in parts for piece in (p, b",\n")][:-1]
        return [head + _HEAD_END + b"\n", *body, *([b"\n"] if body else []), _TAIL]


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
    # Signed 64 bits, what moclo writes: orjson reads up to 2**64 - 1, and a count that high
    # would overflow orjson's writer at its next step, failing every later snapshot.
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


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
    _check_clocks(snapshot)
    devices = snapshot.get("devices")
    _check(isinstance(devices, list), "devices must be a list")
    assert isinstance(devices, list)
    for entry in devices:
        _check_device(entry)


def _check_clocks(snapshot: dict[str, Any]) -> None:
    clocks = snapshot.get("clocks")
    _check(isinstance(clocks, dict), "clocks must be an object")
    assert isinstance(clocks, dict)
    for clock in clocks.values():
        _check(isinstance(clock, list) and len(clock) == 2, "a clock must be [seen, wall]")
        _ints(clock, "a clock")


def _check_device(entry: object) -> None:
    _check(isinstance(entry, list) and len(entry) == 7, "a device must be a list of 7")
    assert isinstance(entry, list)
    _check(all(isinstance(v, str) for v in entry[:3]), "a device's address must be strings")
    _ints(entry[3:6], "a device's newest time, interval and readings")
    _check(isinstance(entry[6], dict), "a device's rules must be an object")
    for name, saved in entry[6].items():
        _check_rule(name, saved)


def _parse(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SnapshotInvalid(f"not JSON ({exc})") from None


def _current(snapshot: object) -> bool:
    """Checks the top of a snapshot; False (said in the log) for another version's."""
    _check(isinstance(snapshot, dict), f"a JSON {type(snapshot).__name__}, not an object")
    assert isinstance(snapshot, dict)
    _check(_is_int(snapshot.get("version")), "no version number: not a snapshot moclo wrote")
    if snapshot.get("version") != VERSION:
        log.warning("alert state snapshot has version %r, not %d: ignored",
                    snapshot.get("version"), VERSION)  # fmt: skip
        return False
    return True


def load(engine: AlertEngine, data: bytes) -> int:
    """Fills a fresh engine from a snapshot; returns how many devices it restored. Raises
    SnapshotInvalid for anything this version could not have written, before changing the
    engine (parsed whole: `load_file` reads a file a device at a time)."""
    snapshot = _parse(data)
    if not _current(snapshot):
        return 0
    _check_shape(snapshot)
    # Every history read first: only reading one checks its contents, and the engine path
    # loads into an engine that holds other partitions' devices (nothing there to start over).
    histories = [_histories(engine, entry) for entry in snapshot["devices"]]
    engine.clocks = {tenant: (c[0], c[1]) for tenant, c in snapshot["clocks"].items()}
    for entry, read in zip(snapshot["devices"], histories, strict=True):
        _restore(engine, entry, read)
    engine.reindex()
    return len(snapshot["devices"])


def load_file(engine: AlertEngine, path: Path) -> int:
    """Fills a fresh engine from the snapshot at `path`, a device (a line) at a time; returns
    how many devices it restored, 0 without a file or with an empty one. Raises SnapshotInvalid
    for anything this version could not have written, possibly with part of it restored: then
    start from a fresh engine."""
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return 0
    with file:
        first = file.readline()
        if not first:
            return 0
        if not first.rstrip(b"\r\n").endswith(_HEAD_END):  # one line: an older version's
            return load(engine, first + file.read())
        header = _parse(first.rstrip(b"\r\n") + _TAIL)
        if not _current(header):
            return 0
        _check_clocks(header)
        engine.clocks = {tenant: (c[0], c[1]) for tenant, c in header["clocks"].items()}
        count = _restore_lines(engine, file)
    engine.reindex()
    return count


def _restore_lines(engine: AlertEngine, lines: Iterator[bytes]) -> int:
    """The device lines after the header, up to `]}` and nothing but blanks after it."""
    more = True  # the line before ended with a comma (or was the header)
    for count, raw in enumerate(lines):  # count: the device lines before this one
        line = raw.rstrip(b"\r\n")
        if line == _TAIL:
            _check(count == 0 or not more, "a comma before the end of the device list")
            _check(not any(rest.strip() for rest in lines), "data after the device list")
            return count
        _check(more, "devices without a comma between them")
        more = line.endswith(b",")
        entry = _parse(line.removesuffix(b","))
        _check_device(entry)
        _restore(engine, entry, _histories(engine, entry))
    raise SnapshotInvalid("cut short: the device list has no end")


def _histories(engine: AlertEngine, entry: list[Any]) -> dict[str, ConditionState]:
    """The condition histories `_restore` keeps of one device (an entry `_check_device`
    passed), by rule name, read without changing the engine. Raises SnapshotInvalid for one
    it cannot read."""
    tenant, device_type, device_id, *_, rules = entry
    read: dict[str, ConditionState] = {}
    for rule in engine.rulebook.rules_for(tenant, device_type, device_id):
        saved = rules.get(rule.name)
        # Only with the rule's settings unchanged: otherwise it may measure something else now.
        if saved is not None and saved[7] is not None and saved[0] == _signature(rule):
            try:
                read[rule.name] = load_state(rule, saved[7])
            except (TypeError, ValueError, IndexError) as exc:
                raise SnapshotInvalid(f"rule {rule.name}'s history: {exc}") from None
    return read


def _restore(engine: AlertEngine, entry: list[Any], histories: dict[str, ConditionState]) -> None:
    """One device's state (an entry `_check_device` passed, its `_histories`) into the engine."""
    tenant, device_type, device_id, newest, interval, readings, rules = entry
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
        if t.rule.name in histories:
            t.condition = histories[t.rule.name]
        elif signature != _signature(t.rule):
            # What the history measures changed: it may mean something else now.
            t.pending_since, t.pending_count = -1, 0


def write(path: Path, data: bytes | list[bytes]) -> None:
    """Replaces the snapshot at `path` atomically (temporary file, fsync, rename); `data` whole
    or in pieces (`SnapshotJob.chunks`)."""
    private_folder(path.parent)
    temporary = path.with_suffix(".tmp")
    with os.fdopen(create_private(temporary, truncate=True), "wb") as file:
        file.writelines([data] if isinstance(data, bytes) else data)
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
