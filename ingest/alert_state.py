"""The alert engine's state across restarts: restored at start from the snapshot and the
stored alert changes newer than it; saved every `snapshot_every_s` a slice at a time between
batches, and whole when stopping (`ingest/alerts/snapshot.py` holds the file format).

Only what is stored may be in a snapshot: a batch judged and lost would be judged again after a
restart, on top of itself. So the service captures slices only once nothing judged is unstored.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ingest.alerts import AlertEngine, snapshot
from ingest.downlink.unapplied import RULE as UNAPPLIED_RULE
from ingest.pipeline import Pipeline
from ingest.spool import Spool
from storage.alert_history import latest_changes
from storage.alert_record import Alert, StoredChange, parse_alert_line
from storage.influx import InfluxClient, InfluxError

log = logging.getLogger("moclo.ingest")


class AlertState:
    def __init__(self, path: Path, pipeline: Pipeline) -> None:
        self.path = path
        self.pipeline = pipeline  # whose engine is saved, and replaced if its snapshot is bad
        self._snapshot: snapshot.SnapshotJob | None = None  # being captured, between batches
        self._writing: asyncio.Future[None] | None = None  # the last one, being written

    async def restore(self, client: InfluxClient, spool: Spool) -> list[Alert]:
        """Rebuilds the engine: the snapshot, then stored changes newer than it. Returns the
        stored open alerts whose rule is gone (resolved now: to be stored and announced)."""
        engine = self.pipeline.engine
        devices = 0
        try:
            # A file that cannot be read (a folder where it should be, no permission) is as
            # unusable as one of the wrong shape.
            # A device at a time: parsed whole, a herd's snapshot costs several times its size.
            devices = await asyncio.to_thread(snapshot.load_file, engine, self.path)
        except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
            # A damaged snapshot costs learnt history, not alerts: the store still has those.
            # Kept aside for a look; left in place, the next snapshot would overwrite it.
            aside = await asyncio.to_thread(snapshot.set_aside, self.path)
            log.warning(
                "alert state snapshot %s unusable (%s); moved to %s, open alerts restored from "
                "the stored alert changes (learnt baselines start afresh)",
                self.path,
                exc,
                aside.name,
            )
            engine = self.pipeline.engine = AlertEngine(engine.rulebook, wall_ns=engine.wall_ns)
        stored: list[StoredChange] = []
        try:
            stored = await latest_changes(client)
        except InfluxError as exc:
            log.warning("could not read stored alerts (%s); restoring from the snapshot", exc)
        # Alert changes still in the spool are newer than anything in InfluxDB.
        for record in await asyncio.to_thread(spool.pending):
            stored.extend(c for line in record.lines if (c := parse_alert_line(line)))
        # desired_not_applied follows the downlink, not readings: the gateway keeps its episodes.
        gateway = self.pipeline.gateway
        if gateway is not None:
            gateway.unapplied.restore(stored)
        orphans = engine.apply_stored([c for c in stored if c.rule != UNAPPLIED_RULE])
        if devices or engine.open_alerts():
            log.info(
                "alert state restored: %d devices, %d open alerts", devices, engine.open_alerts()
            )
        return orphans

    @property
    def capturing(self) -> bool:
        """A periodic snapshot is being captured: the consumer gives it slices."""
        return self._snapshot is not None

    async def begin(self) -> None:
        """Starts capturing a periodic snapshot, once the one before is written."""
        await self.written()
        self._snapshot = snapshot.SnapshotJob(self.pipeline.engine)

    def step(self, budget_s: float) -> None:
        """Captures some devices for the periodic snapshot; once all are, writes it on a
        worker thread while consuming goes on (awaited before the next one and at the end)."""
        job = self._snapshot
        assert job is not None
        if job.step(budget_s):
            self._snapshot = None
            data = job.chunks()  # not joined: that would copy the whole snapshot once more
            self._writing = asyncio.ensure_future(
                asyncio.to_thread(snapshot.write, self.path, data)
            )

    async def written(self) -> None:
        """Returns once the last snapshot begun is written (or failed to be, which is said)."""
        if self._writing is not None:
            writing, self._writing = self._writing, None
            try:
                await writing
            except OSError as exc:
                # Costs learnt history on a crash, never alerts: keep ingesting, say so.
                log.error("could not write the alert state snapshot %s: %s", self.path,
                          exc)  # fmt: skip

    async def save(self, *, unstored: bool) -> None:
        """Saves the whole engine at once (when stopping), unless it has judged a batch that
        was never stored (`unstored`): after a restart those readings come again to be judged
        again."""
        self._snapshot = None
        await self.written()
        if unstored:
            log.warning("alert state not saved: the last batch was not stored")
            return
        engine = self.pipeline.engine
        # Nothing else touches the engine meanwhile: only the consumer does, and it is done.
        self._writing = asyncio.ensure_future(
            asyncio.to_thread(lambda: snapshot.write(self.path, snapshot.dump(engine)))
        )
        await self.written()
