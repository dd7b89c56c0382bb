"""Alert state per partition, for ingest on the distributed engine (docs/scale.md).

A worker judges the devices of the partitions it is active on, and only those: a partition's
first delivery (on a connection) makes this worker its owner, and before that delivery is
judged the worker restores the partition's devices from the partition's own snapshot
(`{spool}/partitions/{set}-{n}.json`, written by whoever owned it) and the stored alert changes
newer than it (InfluxDB, and this worker's spool). A device the snapshot does not know yet (new
since it was written) gets its stored changes when its first reading comes: the changes are read
once per takeover and kept aside until then. So a new owner raises no alert that the old one
raised and stored, and forgets no open episode.

A partition is let go when its connection is lost or when the source steps back from it (the
balance, ingest/engine_source.py): its devices leave the engine, so that silence is never
judged for a device another worker now hears.

Stepping back hands a partition over while its readings flow: the worker stepping back may
still hold deliveries of it, judged or not, and the new owner must not restore the partition
before they are judged and stored (it would judge the next readings without them: a fever
raised twice, or one missed). So each partition has an owner file beside its snapshot
(`{set}-{n}.owner.json`: which worker holds it, and whether it released it). The one stepping
back keeps judging the partition's deliveries it holds; once the last is acknowledged, it
writes the partition's snapshot, then the release. A new owner finding the partition held by
another worker, not released, waits for the release while that worker is alive (bounded by
`RELEASE_WAIT_S`); a worker that died releases nothing, and needs not: what it had not
acknowledged is delivered again, to the new owner. A worker that lost its connection releases
its partitions when it notices. A release or a snapshot is written only while the owner file
still names this process and the connection the partition was taken on (`_write_owned`, under
a lock file per partition): one that comes late never replaces a new owner's claim or snapshot.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import os
import time
from pathlib import Path

import orjson

from devices.topics import TopicError, parse_telemetry_topic
from ingest.alert_state import AlertState
from ingest.alerts import snapshot
from ingest.alerts.lifecycle import DeviceState
from ingest.downlink.unapplied import RULE as UNAPPLIED_RULE
from ingest.engine_source import EngineSource
from ingest.pipeline import Pipeline
from ingest.private import private_folder
from ingest.source import Message
from ingest.spool import Spool
from storage.alert_history import latest_changes
from storage.alert_record import Alert, StoredChange, parse_alert_line
from storage.influx import InfluxClient, InfluxError

log = logging.getLogger("moclo.ingest.partitions")

DeviceKey = tuple[str, str, str]  # (tenant, device type, device id), the engine's key
# How long a new owner waits for a live worker stepping back to release a partition; past it,
# the partition is taken over from its last snapshot and the stored changes (as before).
RELEASE_WAIT_S = 10.0
_RELEASE_POLL_S = 0.05  # how often the owner file is read while waiting
_ALIVE_PROBE_S = 0.25  # how often the engine is asked whether that worker is still there


class PartitionAlertState(AlertState):
    def __init__(
        self,
        directory: Path,
        pipeline: Pipeline,
        source: EngineSource,
        client: InfluxClient,
        spool: Spool,
        tenants: tuple[str, ...] | None,
    ) -> None:
        super().__init__(directory, pipeline)  # whose `path` only names it in messages
        self.directory = directory
        self.source = source
        self.client = client
        self.spool = spool
        self.tenants = tenants
        self.held: dict[int, int] = {}  # partition → the connection it was taken on
        self.devices: dict[int, set[DeviceKey]] = collections.defaultdict(set)
        self._seen: dict[str, int] = {}  # topic → partition, for topics already placed
        self._aside: dict[DeviceKey, list[StoredChange]] = {}  # stored, for devices not seen
        self._jobs: list[tuple[int, snapshot.SnapshotJob]] = []
        self._releasing: set[int] = set()  # stepped back from: handed over after the last ack
        # Stored open alerts whose rule is gone, resolved now: to be stored and announced.
        self._orphans: list[Alert] = []

    def snapshot_of(self, n: int) -> Path:
        return self.directory / f"{self.source.plan.name}-{n}.json"

    def owner_of(self, n: int) -> Path:
        return self.directory / f"{self.source.plan.name}-{n}.owner.json"

    async def restore(self, client: InfluxClient, spool: Spool) -> list[Alert]:
        """Nothing at start: each partition is restored when it is taken over."""
        return []

    # -- ownership -------------------------------------------------------------------------

    def let_go(self) -> None:
        """Drops the partitions this worker no longer holds: all of a lost connection's at
        once, and those the source stepped back from once their last delivery is stored."""
        generation = self.source.generation
        lost = {n: taken_on for n, taken_on in self.held.items() if taken_on != generation}
        for n, taken_on in lost.items():
            self._drop(n)
            # Its deliveries come again, to the new owner; released only if no one claimed it
            # meanwhile (a late release must not cancel the new owner's claim).
            self._mark(n, released=True, connection=taken_on)
            log.info("partition %d let go (connection lost)", n)
        self._releasing |= self.source.take_released()
        self._releasing &= set(self.held)
        for n in sorted(self._releasing):
            if self.source.unacked(n):
                continue  # still judging or storing what it had received: the next time
            self._releasing.discard(n)
            self._jobs = [(k, job) for k, job in self._jobs if k != n]
            taken_on = self.held[n]
            self._write(self.snapshot_of(n), self._capture(n), owner=(n, taken_on))
            # After the snapshot: both written in this order.
            self._mark(n, released=True, connection=taken_on)
            self._drop(n)
            log.info("partition %d handed over after its last batch", n)

    def _mark(self, n: int, *, released: bool, connection: int | None = None) -> None:
        """Claims partition `n` for this process and `connection` (the current one by
        default), or releases it: a release is written only while the owner file still names
        this process and that connection (`_write_owned`)."""
        source = self.source
        taken_on = source.generation if connection is None else connection
        owner = {"worker": source.plan.worker, "incarnation": source.incarnation,
                 "connection": taken_on, "released": released, "at": time.time()}  # fmt: skip
        data = orjson.dumps(owner)
        self._write(self.owner_of(n), data, owner=(n, taken_on) if released else None, lock=n)

    def _drop(self, n: int) -> None:
        engine = self.pipeline.engine
        for key in self.devices.pop(n, set()):
            engine.devices.pop(key, None)
        self._seen = {t: p for t, p in self._seen.items() if p != n}
        self.held.pop(n, None)
        self.source.holding = frozenset(self.held)
        engine.reindex()

    async def admit(self, messages: list[Message]) -> None:
        """Takes over the partitions that `messages` come from for the first time, and places
        devices heard for the first time; before the batch is judged."""
        self.let_go()
        generation = self.source.generation
        new = {m.partition for m in messages if m.connection == generation} - set(self.held)
        if new:
            await self._take_over(sorted(new), generation)
        for message in messages:
            # A forwarded acknowledgement places the device it was routed by: until placed,
            # a device's stored open alerts wait aside, and the acknowledgement would find none.
            topic = message.device_topic or message.topic
            if topic not in self._seen and message.partition in self.held:
                self._place(topic, message.partition)

    def take_orphans(self) -> list[Alert]:
        """The resolutions of stored open alerts whose rule no longer exists, found while
        taking over (as ingest on Mosquitto finds them at start)."""
        orphans, self._orphans = self._orphans, []
        return orphans

    def _place(self, topic: str, n: int) -> None:
        self._seen[topic] = n
        try:
            a = parse_telemetry_topic(self.pipeline.decoder.prefix, topic)
        except TopicError:
            return  # the decoder rejects it, with its reason
        key = (a.tenant, a.device_type, a.device_id)
        self.devices[n].add(key)
        changes = self._aside.pop(key, None)
        if changes and key not in self.pipeline.engine.devices:
            self._orphans += self.pipeline.engine.apply_stored(changes)

    async def _take_over(self, partitions: list[int], generation: int) -> None:
        began = time.monotonic()
        log.info("taking over partitions %s", ", ".join(map(str, partitions)))
        deadline = began + RELEASE_WAIT_S
        for n in partitions:
            await self._await_release(n, deadline)
        released = time.monotonic()
        stored = await self._stored_changes()  # the releases' last batches among them
        read = time.monotonic()
        mine = {key for n in self.held for key in self.devices[n]}
        self._aside = collections.defaultdict(list)
        for change in stored:
            key = (change.tenant, change.device_type, change.device_id)
            # This worker's own devices are ahead of the store; desired_not_applied is the
            # control queue owner's (ingest/control.py), not a rule of the partitions.
            if key not in mine and change.rule != UNAPPLIED_RULE:
                self._aside[key].append(change)
        for n in partitions:
            count = await self._load(n)
            for key in self.devices[n]:
                if changes := self._aside.pop(key, None):
                    self._orphans += self.pipeline.engine.apply_stored(changes)
            self.held[n] = generation
            self.source.holding = frozenset(self.held)
            self._mark(n, released=False, connection=generation)
            log.info(
                "partition %d taken over: %d devices from its snapshot (in %.3f s: release "
                "%.3f s, stored changes %.3f s)",
                *(n, count, time.monotonic() - began, released - began, read - released),
            )
        self.pipeline.engine.reindex()

    async def _await_release(self, n: int, deadline: float) -> None:
        """Returns once partition `n` is released by the worker that held it, or that worker
        is gone, or at `deadline` (said)."""
        began, next_probe = time.monotonic(), 0.0
        while (owner := await self._unreleased_owner(n)) is not None:
            now = time.monotonic()
            if now >= next_probe:
                if not await self.source.worker_alive(*owner):
                    log.info("partition %d: worker %d, which held it, is gone", n, owner[0])
                    return
                next_probe = time.monotonic() + _ALIVE_PROBE_S
            if now >= deadline:
                log.warning(
                    "partition %d: worker %d did not release it within %.0f s; taken over from "
                    "its last snapshot and the stored changes",
                    *(n, owner[0], RELEASE_WAIT_S),
                )
                return
            await asyncio.sleep(_RELEASE_POLL_S)  # a wait on the owner file, with a deadline
        if time.monotonic() - began > _RELEASE_POLL_S:
            log.info("partition %d released to us after %.2f s", n, time.monotonic() - began)

    async def _unreleased_owner(self, n: int) -> tuple[int, str] | None:
        """The other worker process (number, incarnation) holding partition `n` by its owner
        file, if it did not release it."""
        try:
            data = await asyncio.to_thread(snapshot.read, self.owner_of(n))
            owner = orjson.loads(data) if data else {}
            worker, incarnation = owner.get("worker"), owner.get("incarnation")
            released = owner.get("released")
        except (OSError, orjson.JSONDecodeError, AttributeError) as exc:
            log.warning("partition %d's owner file unusable (%s): not waiting for it", n, exc)
            return None
        if released or not isinstance(worker, int) or not isinstance(incarnation, str):
            return None
        return None if incarnation == self.source.incarnation else (worker, incarnation)

    async def _stored_changes(self) -> list[StoredChange]:
        stored: list[StoredChange] = []
        try:
            for tenant in self.tenants or (None,):
                stored += await latest_changes(self.client, tenant=tenant)
        except InfluxError as exc:
            log.warning("could not read stored alerts (%s); restoring from snapshots", exc)
        for record in await asyncio.to_thread(self.spool.pending):
            stored.extend(c for line in record.lines if (c := parse_alert_line(line)))
        return stored

    async def _load(self, n: int) -> int:
        """Partition `n`'s snapshot into the engine (its devices only); 0 without one."""
        engine = self.pipeline.engine
        clocks = dict(engine.clocks)
        before = set(engine.devices)
        try:
            data = await asyncio.to_thread(snapshot.read, self.snapshot_of(n))
            count = snapshot.load(engine, data) if data else 0
        except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
            log.warning("partition %d's snapshot unusable (%s): restored from the store", n, exc)
            count = 0
        for tenant, clock in clocks.items():  # a tenant's clock only moves forward
            engine.clocks[tenant] = max(clock, engine.clocks.get(tenant, clock))
        self.devices[n] |= set(engine.devices) - before
        return count

    # -- snapshots, one per held partition -------------------------------------------------

    @property
    def capturing(self) -> bool:
        return bool(self._jobs)

    async def begin(self) -> None:
        await self.written()
        self._jobs = [(n, snapshot.SnapshotJob(self.pipeline.engine, self._states(n)))
                      for n in sorted(self.held)]  # fmt: skip

    def _states(self, n: int) -> list[DeviceState]:
        devices = self.pipeline.engine.devices
        return [devices[key] for key in self.devices[n] if key in devices]

    def step(self, budget_s: float) -> None:
        while self._jobs and self._jobs[0][1].step(budget_s):
            n, job = self._jobs.pop(0)
            if n in self.held and n not in self._releasing:  # else its last one is written
                self._write(self.snapshot_of(n), job.result(), owner=(n, self.held[n]))

    def _capture(self, n: int) -> bytes:
        job = snapshot.SnapshotJob(self.pipeline.engine, self._states(n))
        job.step(budget_s=float("inf"))
        return job.result()

    def _write(
        self, path: Path, data: bytes, *, owner: tuple[int, int] | None = None, lock: int = -1
    ) -> None:
        """Writes `data` to `path` on a thread, after every write begun before. With `owner`
        (partition, connection): only while that partition's owner file names this process
        and that connection, so that a worker that lost a partition (its connection lost, or
        paused while another took over) writes over neither the new owner's claim nor its
        snapshots. Under the partition's lock (`lock`, or owner's partition) if either."""
        previous, n = self._writing, owner[0] if owner else lock
        incarnation = self.source.incarnation
        name = self.source.plan.name
        connection = owner[1] if owner else None

        async def write() -> None:
            if previous is not None:
                await previous
            if n < 0:
                await asyncio.to_thread(snapshot.write, path, data)
            else:
                args = (self.directory, name, n, path, data, incarnation, connection)
                await asyncio.to_thread(_write_owned, *args)

        self._writing = asyncio.ensure_future(write())

    async def save(self, *, unstored: bool) -> None:
        self._jobs = []
        await self.written()
        if unstored:
            log.warning("partition snapshots not saved: the last batch was not stored")
        for n, taken_on in sorted(self.held.items()):
            if not unstored:
                self._write(self.snapshot_of(n), self._capture(n), owner=(n, taken_on))
            # Released while still connected: the next owner waits for this, not for a timeout.
            self._mark(n, released=True, connection=taken_on)
        await self.written()


def _write_owned(
    directory: Path,
    name: str,
    n: int,
    path: Path,
    data: bytes,
    incarnation: str,
    connection: int | None,
) -> None:
    """Writes `data` to `path` under partition `n`'s lock (`{name}-{n}.lock`, shared by the
    workers of the folder); with `connection`, only if the owner file names this process
    (`incarnation`) and that connection: a compare-and-set, so that a release or snapshot
    coming late never replaces what a new owner claimed or wrote."""
    private_folder(directory)
    descriptor = os.open(directory / f"{name}-{n}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # released with the descriptor
        if connection is not None:
            try:
                owner = orjson.loads(snapshot.read(directory / f"{name}-{n}.owner.json") or b"{}")
            except orjson.JSONDecodeError:
                owner = {}
            owner = owner if isinstance(owner, dict) else {}
            named = (owner.get("incarnation"), owner.get("connection")) if owner else None
            if named != (incarnation, connection):
                log.info("partition %d is another worker's now: %s not written", n, path.name)
                return
        snapshot.write(path, data)
    finally:
        os.close(descriptor)
