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
"""

from __future__ import annotations

import asyncio
import collections
import logging
from pathlib import Path

from devices.topics import TopicError, parse_telemetry_topic
from ingest.alert_state import AlertState
from ingest.alerts import snapshot
from ingest.alerts.lifecycle import DeviceState
from ingest.downlink.unapplied import RULE as UNAPPLIED_RULE
from ingest.engine_source import EngineSource
from ingest.pipeline import Pipeline
from ingest.source import Message
from ingest.spool import Spool
from storage.alert_history import latest_changes
from storage.alert_record import Alert, StoredChange, parse_alert_line
from storage.influx import InfluxClient, InfluxError

log = logging.getLogger("moclo.ingest.partitions")

DeviceKey = tuple[str, str, str]  # (tenant, device type, device id), the engine's key


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
        # Stored open alerts whose rule is gone, resolved now: to be stored and announced.
        self._orphans: list[Alert] = []

    def snapshot_of(self, n: int) -> Path:
        return self.directory / f"{self.source.plan.name}-{n}.json"

    async def restore(self, client: InfluxClient, spool: Spool) -> list[Alert]:
        """Nothing at start: each partition is restored when it is taken over."""
        return []

    # -- ownership -------------------------------------------------------------------------

    def let_go(self) -> None:
        """Drops the partitions this worker no longer holds: all of a lost connection's, and
        those the source stepped back from."""
        generation = self.source.generation
        lost = {n for n, taken_on in self.held.items() if taken_on != generation}
        lost |= self.source.take_released() & set(self.held)
        for n in lost:
            self._drop(n)
            log.info("partition %d let go", n)

    def _drop(self, n: int) -> None:
        engine = self.pipeline.engine
        for key in self.devices.pop(n, set()):
            engine.devices.pop(key, None)
        self._seen = {t: p for t, p in self._seen.items() if p != n}
        self.held.pop(n, None)
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
        stored = await self._stored_changes()
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
            log.info("partition %d taken over: %d devices from its snapshot", n, count)
        self.pipeline.engine.reindex()

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
            self._write(n, job.result())

    def _write(self, n: int, data: bytes) -> None:
        previous = self._writing
        path = self.snapshot_of(n)

        async def write() -> None:
            if previous is not None:
                await previous
            await asyncio.to_thread(snapshot.write, path, data)

        self._writing = asyncio.ensure_future(write())

    async def save(self, *, unstored: bool) -> None:
        self._jobs = []
        await self.written()
        if unstored:
            log.warning("partition snapshots not saved: the last batch was not stored")
            return
        for n in sorted(self.held):
            job = snapshot.SnapshotJob(self.pipeline.engine, self._states(n))
            job.step(budget_s=float("inf"))
            self._write(n, job.result())
        await self.written()
