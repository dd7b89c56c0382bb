"""The ingest service: wires source → decode/validate → sink, with the alert engine beside them.

For each batch: decode and validate every message, evaluate alert rules, publish the alert
changes, write readings, rejections and alert changes to InfluxDB in one request (or, while
InfluxDB is unavailable, append them to the on-disk spool and fsync), and only then acknowledge
the batch's MQTT messages. A crash anywhere before the acknowledgement means the broker delivers
the batch again; because a reading's point is keyed by its own timestamp, storing it again
overwrites instead of duplicating, and a change published again keeps its id.

Batches are pipelined, one deep: while batch k is being stored (its alert changes published,
its lines written, its messages acknowledged) the consumer decodes and judges batch k+1, in
slices that give the event loop back between them. Batch k+1 is stored only once batch k is,
so changes are published, lines written and messages acknowledged in arrival order, and a batch
that fails to be stored stops everything after it unacknowledged. The sweep for silent devices
and the alert-state snapshot wait until nothing judged is unstored.

Alert changes go out on MQTT (the change on `{prefix}/{tenant}/alerts/{device_id}`, the
current state retained on `{prefix}/{tenant}/alert-state/{device_id}/{rule}`) and to the
notifiers, whose queues never hold ingestion back. Between batches the consumer sweeps for
silent devices and, every 30 s, snapshots the alert engine's state; on start the state is
restored from that snapshot and the stored alert changes (`ingest/alerts/snapshot.py`).

With a registry (MOCLO_UNREGISTERED `reject` or `flag`), the decoder checks each message's
device against the registry's active devices, a set in memory that the consumer re-reads
between batches when the registry file has changed (checked every 2 s), so a revocation takes
effect without a restart.

Tasks, under one TaskGroup: `consume` (the loop above), `drain-spool` (spool → InfluxDB, oldest
first), `notify` (webhook and log) and `watch` (connection state for the health check); the
HTTP server (/healthz, /metrics) runs beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from access.known import RegisteredDevices
from core.mqtt import connection_login
from core.settings import Settings
from devices.topics import ack_subscription, shared, telemetry_subscription
from ingest.alerts import AlertEngine, snapshot
from ingest.alerts.rulebook import RuleBook
from ingest.announce import AlertPublisher
from ingest.cardinality import CardinalityGuard
from ingest.decode import Decoder, Limits, RejectReason
from ingest.gcpolicy import quiet_collector
from ingest.health import Liveness, assess
from ingest.http import health_response, serve
from ingest.metrics import render
from ingest.notify import LogNotifier, Notifiers, WebhookNotifier
from ingest.pipeline import Pipeline, PreparedBatch
from ingest.rejections import RejectionLog
from ingest.sink import InfluxSink, RefusedLine, WriteAborted
from ingest.source import Message, MqttSource
from ingest.spool import Spool, SpoolFull
from storage.alert_history import latest_changes
from storage.alert_record import Alert, StoredChange, parse_alert_line
from storage.influx import InfluxClient, InfluxError, InfluxUnavailable
from storage.lineprotocol import is_reading_line, line_field_string

log = logging.getLogger("moclo.ingest")

UNREGISTERED_MEASUREMENT = "moclo_unregistered"
_LOGGED_UNREGISTERED = 10  # unregistered devices named in the log per run; the rest counted


@dataclass(frozen=True, slots=True)
class IngestOptions:
    batch_messages: int = 2_000  # messages per InfluxDB write, at most
    batch_bytes: int = 1024 * 1024  # payload bytes per batch, at most (arrays fill it first)
    linger_s: float = 0.02  # how long a non-full batch waits for more messages
    window: int = 10_000  # unacknowledged messages the broker may send us (Receive Maximum)
    window_bytes: int = 8 * 1024 * 1024  # and at most this much payload waiting (arrays)
    limits: Limits = field(default_factory=Limits)
    spool_max_bytes: int = 1024**3
    stall_after_s: float = 60.0  # /healthz: messages waiting and none handled for this long
    summary_every_s: float = 30.0  # how often rejection counts are logged, when they changed
    sweep_every_s: float = 1.0  # how often silent devices are looked for
    retention_every_s: float = 600.0  # how often the database's retention is read again
    snapshot_every_s: float = 30.0  # how often the alert engine's state is saved
    log_alerts: bool = True  # log every alert change (`moclo up` prints them itself)
    alert_rules: bool = True  # False: no rules at all (the benchmark's baseline)
    quiet_gc: bool = True  # freeze start-up objects (ingest/gcpolicy.py)


@dataclass(slots=True)
class IngestStats:
    messages: int = 0  # handled: stored (or spooled) and acknowledged
    readings_stored: int = 0  # written to InfluxDB, directly or from the spool
    readings_spooled: int = 0  # appended to the spool while InfluxDB was unavailable
    rejected: int = 0
    alerts_raised: int = 0
    alerts_acknowledged: int = 0
    alerts_resolved: int = 0
    batches_written: int = 0
    open_alerts: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)


AlertCallback = Callable[[Alert], None]


def judges_alerts(settings: Settings) -> bool:
    """An ingest in a share group sees only some of each device's readings (the broker deals
    messages to the group's members in turn), so rules that follow a device over time would
    judge from fragments: it stores and validates, and judges no rules."""
    return settings.ingest_share_group is None


def subscriptions(settings: Settings) -> tuple[str, ...]:
    """Telemetry (and acknowledgements, where alerts are judged) of all tenants or of
    MOCLO_INGEST_TENANTS; in a share group, telemetry only, shared."""
    prefix = settings.topic_prefix
    tenants = settings.tenants or ("+",)
    telemetry = tuple(telemetry_subscription(prefix, t) for t in tenants)
    if settings.ingest_share_group is not None:
        return tuple(shared(settings.ingest_share_group, s) for s in telemetry)
    return (*telemetry, *(ack_subscription(prefix, t) for t in tenants))


class Ingest:
    def __init__(
        self,
        settings: Settings,
        stop: asyncio.Event,
        *,
        options: IngestOptions = IngestOptions(),
        stats: IngestStats | None = None,
        on_alert: AlertCallback | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.stop = stop
        self.stats = stats or IngestStats()
        self.on_alert = on_alert
        self.liveness = Liveness()
        self.sink = InfluxSink(
            InfluxClient(
                settings.influx_url, settings.influx_db, token=settings.influx_token_value
            ),
            stopping=stop,
        )
        self.source = MqttSource(
            settings.mqtt,
            client_id=settings.ingest_id,
            subscription=subscriptions(settings),
            batch_messages=options.batch_messages,
            batch_bytes=options.batch_bytes,
            window=options.window,
            window_bytes=options.window_bytes,
        )
        # Its own login (`USER~alerts`, same password): on a broker that names connections by
        # their login, a second connection as USER would take the consumer's session.
        self.announcer = AlertPublisher(
            settings.mqtt.for_connection("alerts"),
            client_id=connection_login(settings.ingest_id, "alerts"),
            prefix=settings.topic_prefix,
        )
        self.spool = Spool(
            Path(settings.spool_dir) / settings.ingest_id, max_bytes=options.spool_max_bytes
        )
        self.snapshot_path = self.spool.directory / "alert-state.json"
        notifiers: list[LogNotifier | WebhookNotifier] = []
        if options.log_alerts:
            notifiers.append(LogNotifier())
        self.webhook: WebhookNotifier | None = None
        if settings.webhook_url is not None:
            self.webhook = WebhookNotifier(
                settings.webhook_url.get_secret_value(),
                min_severity=settings.webhook_min_severity,
            )
            notifiers.append(self.webhook)
        self.notifiers = Notifiers(notifiers)
        limits = options.limits
        self.registered: RegisteredDevices | None = None
        if settings.unregistered != "off":
            self.registered = RegisteredDevices(settings.registry)
        # MOCLO_MAX_READING_AGE is the oldest accepted; the database's retention, once read,
        # may narrow it (`_watch_retention`).
        limits = replace(limits, max_past_s=settings.max_reading_age)
        self.pipeline = Pipeline(
            Decoder(
                settings.topic_prefix,
                limits=limits,
                registered=self.registered,
                unregistered="flag" if settings.unregistered == "flag" else "reject",
            ),
            AlertEngine(
                load_rulebook(settings)
                if options.alert_rules and judges_alerts(settings)
                else RuleBook.empty()
            ),
            RejectionLog(),
            CardinalityGuard(
                burst=limits.new_devices_burst, per_minute=limits.new_devices_per_minute
            ),
        )
        self.http_port: int | None = None
        self._spooled = asyncio.Event()  # wakes the drainer
        self._drained = asyncio.Event()  # wakes a consumer waiting for spool room
        self._consumed = asyncio.Event()  # the consumer is done: notifiers may finish
        self._orphans: list[Alert] = []  # stored open alerts whose rule is gone
        self._unstored = 0  # batches the engine has judged and that are not stored yet
        self._snapshot: snapshot.SnapshotJob | None = None  # being captured, between batches
        self._writing: asyncio.Future[None] | None = None  # the last one, being written
        self._unregistered_logged = 0
        self._last_unregistered_ns = 0
        self._retention_due = asyncio.Event()  # read the retention again now
        self.retention_s: float | None = None  # what InfluxDB keeps, as last read (None: all)
        self._retention_unknown_said = False

    async def run(self, ready: asyncio.Event | None = None) -> IngestStats:
        """Runs until `stop` is set; then finishes what it holds and returns."""
        try:
            await self.sink.client.ensure_database()
            await self._read_retention()
            await self._load_registry()
            await self._restore_alerts()
            await self.announcer.start()
            await self.source.start()
            if self._orphans:
                await self._announce(self._orphans)
            server = await self._serve_http()
            log.info(
                "ingesting %s from %s into %s db=%s%s",
                self.source.subscription,
                self.settings.mqtt.display(),
                self.sink.client.url,
                self.settings.influx_db,
                f"; health on http://{self._http_host()}:{self.http_port}/healthz"
                if self.http_port
                else "",
            )
            if not self.spool.is_empty():
                log.info(
                    "spool holds %d batches from before; writing them first", self.spool.records
                )
            rulebook = self.pipeline.engine.rulebook
            if not judges_alerts(self.settings):
                log.info(
                    "share group %s: this ingest stores and validates its share of the "
                    "readings and judges no alert rules (a device's readings are dealt to "
                    "several processes); for alerts, split the fleet by tenant instead "
                    "(MOCLO_INGEST_TENANTS)",
                    self.settings.ingest_share_group,
                )
            log.info(
                "alert rules: %s%s",
                f"the defaults with {rulebook.source}'s {len(rulebook.overrides)} changes"
                if rulebook.source
                else "each device type's defaults (moclo rules list)",
                f"; alert changes also to the webhook at {self.webhook.target}"
                if self.webhook is not None
                else "",
            )
            if ready is not None:
                ready.set()
            try:
                with quiet_collector(enabled=self.options.quiet_gc):
                    async with asyncio.TaskGroup() as tasks:
                        tasks.create_task(self._consume(), name="consume")
                        tasks.create_task(self._drain_spool(), name="drain-spool")
                        tasks.create_task(self._watch(), name="watch")
                        tasks.create_task(self._watch_retention(), name="retention")
                        tasks.create_task(self.notifiers.run(self._consumed), name="notify")
            finally:
                if server is not None:
                    server.close()
            await self._save_alert_state()
        finally:
            await self.source.close()
            await self.announcer.close()
            await self.sink.close()
            if self.registered is not None:
                self.registered.close()
        return self.stats

    # -- consume ---------------------------------------------------------------------------

    async def _consume(self) -> None:
        options = self.options
        next_summary = time.monotonic() + options.summary_every_s
        next_sweep = time.monotonic() + max(options.sweep_every_s, 5.0)
        next_snapshot = time.monotonic() + options.snapshot_every_s
        storing = _Storing()  # the batch before, being stored
        try:
            while not self.stop.is_set():
                await self._refresh_registry()
                if storing.done():
                    await storing.finished()  # raises what storing it raised
                messages = await self._next_batch_or_stop(options.sweep_every_s)
                if messages:
                    prepared = await self._prepare(messages, after=storing)
                    await storing.finished()
                    storing.start(functools.partial(self._store, messages, prepared))
                # Silence is judged only once the backlog is in: a device whose readings are
                # still queued at the broker is not silent.
                caught_up = not messages or self.source.caught_up
                if caught_up and time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + options.sweep_every_s
                    await storing.finished()
                    self._unstored += 1
                    swept = self.pipeline.sweep()
                    if swept.alerts:
                        await self._commit(swept.lines, swept.alerts)
                    self._unstored -= 1
                if self._snapshot is None and time.monotonic() >= next_snapshot:
                    await self._snapshot_written()  # the previous one, if still writing
                    next_snapshot = time.monotonic() + options.snapshot_every_s
                    self._snapshot = snapshot.SnapshotJob(self.pipeline.engine)
                if self._snapshot is not None:
                    # Only what is stored may be in a snapshot: a batch judged and lost would
                    # be judged again after a restart, on top of itself.
                    await storing.finished()
                    # A slice per turn, longer when idle, so consuming never stalls on it.
                    self._snapshot_step(budget_s=0.01 if messages else 0.2)
                if time.monotonic() >= next_summary:
                    next_summary = time.monotonic() + self.options.summary_every_s
                    if (summary := self.pipeline.rejections.summary()) is not None:
                        log.info("%s", summary)
            await storing.finished()
            # Stopping: handle what had arrived when the stop came, so it is acknowledged now
            # rather than delivered again later; no more, since every acknowledgement lets the
            # broker send another message.
            remaining = self.source.pending_count
            while remaining > 0 and (messages := self.source.take_pending(remaining)):
                remaining -= len(messages)
                await self._store(messages, await self._prepare(messages))
        except WriteAborted:
            log.warning(
                "stopped while InfluxDB is unavailable and the spool is full; "
                "unacknowledged messages will be delivered again"
            )
        finally:
            # Only when the consumer fails or is cancelled: the batch being stored is not
            # acknowledged, so the broker delivers it again.
            await storing.abandon()
            self._spooled.set()  # let the drainer see the stop
            self._consumed.set()

    async def _next_batch_or_stop(self, timeout_s: float) -> list[Message]:
        """The next batch; [] when `stop` is set or nothing came within `timeout_s`."""
        batch = asyncio.ensure_future(self.source.next_batch(linger_s=self.options.linger_s))
        if not await _first_of(batch, self.stop, timeout_s=timeout_s):
            batch.cancel()
            await asyncio.wait({batch})
            if batch.cancelled():
                return []  # nothing was taken from the source, so nothing is lost
        # Either it finished first, or it finished while being cancelled: handle it.
        return batch.result()

    async def _prepare(
        self, messages: list[Message], *, after: _Storing | None = None
    ) -> PreparedBatch:
        """Decodes and judges a batch, once the batch before (`after`) is on its way to
        InfluxDB, a slice at a time: between slices the event loop runs, so the batch before
        is acknowledged as soon as it is stored."""
        if after is not None:
            await after.on_its_way()
        self._unstored += 1
        prepared = PreparedBatch()
        start = 0
        while start < len(messages):
            end, size = start, 0
            while end < len(messages) and size < _SLICE_BYTES:
                size += len(messages[end].payload)
                end += 1
            part = self.pipeline.prepare(messages[start:end])
            prepared.lines += part.lines
            prepared.readings += part.readings
            prepared.rejections += part.rejections
            prepared.alerts += part.alerts
            start = end
            if start < len(messages):
                await asyncio.sleep(0)
        if self.settings.unregistered == "flag":
            prepared.lines.extend(self._unregistered_lines())
        return prepared

    async def _store(
        self, messages: list[Message], prepared: PreparedBatch, sent: asyncio.Event | None = None
    ) -> None:
        """Publishes the batch's alert changes, stores its lines, then acknowledges it. `sent`
        is set once the lines are on their way to InfluxDB."""
        await self._commit(prepared.lines, prepared.alerts, sent)
        self._unstored -= 1
        self.source.ack(messages)
        stats = self.stats
        self.liveness.last_handled = time.monotonic()
        stats.messages += len(messages)
        stats.rejected += len(prepared.rejections)
        stats.rejected_by_reason.update(r.reason.value for r in prepared.rejections)

    # -- the registry ------------------------------------------------------------------------

    async def _load_registry(self) -> None:
        registered = self.registered
        if registered is None:
            log.info("no registry check: readings of any device are accepted "
                     "(MOCLO_UNREGISTERED=off)")  # fmt: skip
            return
        await asyncio.to_thread(registered.refresh)
        mode = self.settings.unregistered
        log.info(
            "registry %s: %d devices registered; readings of others are %s (MOCLO_UNREGISTERED=%s)",
            registered.path,
            len(registered),
            "rejected" if mode == "reject" else f"stored and noted in {UNREGISTERED_MEASUREMENT}",
            mode,
        )
        if not len(registered) and mode == "reject":
            log.warning(
                "no device is registered, so every reading will be rejected as "
                "unregistered_device: register devices with `moclo devices add` or "
                "`moclo devices import`, or set MOCLO_UNREGISTERED=flag (or off)"
            )

    async def _refresh_registry(self) -> None:
        registered = self.registered
        if registered is None or not registered.due():
            return
        if await asyncio.to_thread(registered.refresh):
            self.pipeline.decoder.forget_flagged()
            log.info("registry changed: %d devices registered", len(registered))

    def _unregistered_lines(self) -> list[str]:
        """A `moclo_unregistered` point for each unregistered device let through (flag mode)
        and not seen before. device_id is a field, not a tag, so invented ids add no series."""
        lines = []
        for address, topic, received_ns in self.pipeline.decoder.take_flagged():
            if self._unregistered_logged < _LOGGED_UNREGISTERED:
                self._unregistered_logged += 1
                log.warning(
                    "readings of unregistered device %s/%s/%s are stored (MOCLO_UNREGISTERED="
                    "flag) and noted in %s%s",
                    address.tenant,
                    address.device_type,
                    address.device_id,
                    UNREGISTERED_MEASUREMENT,
                    "; further ones are counted in /metrics, not logged"
                    if self._unregistered_logged == _LOGGED_UNREGISTERED
                    else "",
                )
            # Strictly increasing stamps: two devices of a tenant and type must not share one.
            ts_ns = max(received_ns, self._last_unregistered_ns + 1)
            self._last_unregistered_ns = ts_ns
            lines.append(
                f"{UNREGISTERED_MEASUREMENT},device_type={address.device_type},"
                f"tenant={address.tenant} device_id={line_field_string(address.device_id)},"
                f"topic={line_field_string(topic)} {ts_ns}"
            )
        return lines

    async def _commit(
        self, lines: list[str], alerts: list[Alert], sent: asyncio.Event | None = None
    ) -> None:
        """Tells the world about the alert changes, then stores the lines (changes included).

        Publishing first makes alerts at-least-once: a crash after storing but before
        publishing would leave a change stored that nobody was told about, and the restored
        engine would not raise it again. The other way round, a crash before storing means
        the batch is delivered again and the change is published again, with the same id.
        """
        if alerts:
            await self._announce(alerts)
        if lines:
            await self._deliver(lines, sent)

    async def _announce(self, alerts: list[Alert]) -> None:
        stats = self.stats
        for alert in alerts:
            if alert.state == "raised":
                stats.alerts_raised += 1
            elif alert.state == "acknowledged":
                stats.alerts_acknowledged += 1
            else:
                stats.alerts_resolved += 1
            self.notifiers.submit(alert)
            if self.on_alert is not None:
                self.on_alert(alert)
        stats.open_alerts = self.pipeline.engine.open_alerts()
        if not await self.announcer.publish(alerts, timeout_s=10.0):
            # The changes are stored in moclo_alerts either way; only the live notification
            # may be missing, and holding the readings back would not bring it.
            log.warning(
                "the broker did not confirm %d alert notifications within 10 s", 2 * len(alerts)
            )

    async def _deliver(self, lines: list[str], sent: asyncio.Event | None = None) -> None:
        """Stores lines durably: in InfluxDB if it answers and nothing is spooled before them,
        else in the spool. Returns only once they are stored."""
        if self.spool.is_empty():
            try:
                refused = await self.sink.write_once(lines, sent=sent)
            except InfluxUnavailable as exc:
                log.warning(
                    "InfluxDB unavailable (%s); spooling to %s until it is back",
                    exc,
                    self.spool.directory,
                )
            else:
                self._count_written(lines, refused)
                await self._record_refused(lines, refused)
                return
        await self._spool(lines)

    async def _spool(self, lines: list[str]) -> None:
        while True:
            self._drained.clear()  # before trying, so a pop during the attempt still wakes us
            try:
                await asyncio.to_thread(self.spool.append, lines)
                break
            except SpoolFull as exc:
                # Backpressure: hold this batch (and so the broker's window) until the
                # drainer frees room, or until told to stop.
                log.warning("%s; waiting for InfluxDB to take the backlog", exc)
                await _first_of(self._drained, self.stop)
                if self.stop.is_set():
                    raise WriteAborted(str(exc)) from exc
        self.stats.readings_spooled += sum(map(is_reading_line, lines))
        self._spooled.set()

    def _count_written(self, lines: Sequence[str], refused: list[RefusedLine]) -> None:
        refused_at = {r.index for r in refused}
        self.stats.readings_stored += sum(
            1 for i, line in enumerate(lines) if i not in refused_at and is_reading_line(line)
        )
        self.stats.batches_written += 1

    async def _record_refused(self, lines: Sequence[str], refused: list[RefusedLine]) -> None:
        """Stores a rejection for each refused reading line, all in one write. InfluxDB has
        just answered, so these go to it directly, never through the bounded spool (which may
        be full). A refusal for age means the retention changed: it is read again soon."""
        records: list[str] = []
        for line in refused:
            record = self.pipeline.refused(lines[line.index], line.error, time.time_ns())
            if record is None:
                log.error(
                    "InfluxDB refused an internal line: %s (%s)",
                    lines[line.index][:200],
                    line.error,
                )
                continue
            records += record.lines
            for rejection in record.rejections:
                self.stats.rejected += 1
                self.stats.rejected_by_reason[rejection.reason.value] += 1
                if rejection.reason is RejectReason.BEYOND_RETENTION:
                    self._retention_due.set()
        if records:
            await self.sink.write_batch(records)

    # -- alert state ---------------------------------------------------------------------

    async def _restore_alerts(self) -> None:
        """Rebuilds the engine: the snapshot, then stored changes newer than it."""
        engine = self.pipeline.engine
        devices = 0
        try:
            # A file that cannot be read (a folder where it should be, no permission) is as
            # unusable as one of the wrong shape.
            data = await asyncio.to_thread(snapshot.read, self.snapshot_path)
            devices = await asyncio.to_thread(snapshot.load, engine, data) if data else 0
        except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
            # A damaged snapshot costs learnt history, not alerts: the store still has those.
            # Kept aside for a look; left in place, the next snapshot would overwrite it.
            aside = await asyncio.to_thread(snapshot.set_aside, self.snapshot_path)
            log.warning(
                "alert state snapshot %s unusable (%s); moved to %s, open alerts restored from "
                "the stored alert changes (learnt baselines start afresh)",
                self.snapshot_path,
                exc,
                aside.name,
            )
            engine = self.pipeline.engine = AlertEngine(engine.rulebook)
        stored: list[StoredChange] = []
        try:
            stored = await latest_changes(self.sink.client)
        except InfluxError as exc:
            log.warning("could not read stored alerts (%s); restoring from the snapshot", exc)
        # Alert changes still in the spool are newer than anything in InfluxDB.
        for record in await asyncio.to_thread(self.spool.pending):
            stored.extend(c for line in record.lines if (c := parse_alert_line(line)))
        orphans = engine.apply_stored(stored)
        self.stats.open_alerts = engine.open_alerts()
        if devices or engine.open_alerts():
            log.info(
                "alert state restored: %d devices, %d open alerts", devices, engine.open_alerts()
            )
        if orphans:
            await self._deliver([alert.to_line() for alert in orphans])
            self._orphans = orphans  # announced once connected

    def _snapshot_step(self, budget_s: float) -> None:
        """Captures some devices for the periodic snapshot; once all are, writes it on a
        worker thread while consuming goes on (awaited before the next one and at the end)."""
        job = self._snapshot
        assert job is not None
        if job.step(budget_s):
            self._snapshot = None
            data = job.result()
            self._writing = asyncio.ensure_future(
                asyncio.to_thread(snapshot.write, self.snapshot_path, data)
            )

    async def _snapshot_written(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            try:
                await writing
            except OSError as exc:
                # Costs learnt history on a crash, never alerts: keep ingesting, say so.
                log.error("could not write the alert state snapshot %s: %s", self.snapshot_path,
                          exc)  # fmt: skip

    async def _save_alert_state(self) -> None:
        """Saves the whole engine at once (when stopping), unless it has judged a batch that
        was never stored: after a restart those readings come again to be judged again."""
        self._snapshot = None
        await self._snapshot_written()
        if self._unstored:
            log.warning("alert state not saved: the last batch was not stored")
            return
        engine = self.pipeline.engine
        # Nothing else touches the engine meanwhile: only the consumer does, and it is done.
        self._writing = asyncio.ensure_future(
            asyncio.to_thread(lambda: snapshot.write(self.snapshot_path, snapshot.dump(engine)))
        )
        await self._snapshot_written()

    # -- drain the spool -------------------------------------------------------------------

    async def _drain_spool(self) -> None:
        """Writes spooled batches to InfluxDB, oldest first, retrying until it is back."""
        try:
            while not self.stop.is_set():
                self._spooled.clear()  # before looking, so an append meanwhile wakes us
                record = await asyncio.to_thread(self.spool.peek)
                if record is None:
                    await _first_of(self._spooled, self.stop)
                    continue
                try:
                    refused = await self.sink.write_batch(record.lines)
                    self._count_written(record.lines, refused)
                    await self._record_refused(record.lines, refused)
                except WriteAborted:
                    return  # stopping; the spool keeps the batch for the next start
                await asyncio.to_thread(self.spool.pop, record)
                self._drained.set()
                if self.spool.is_empty():
                    log.info("spool drained: InfluxDB has everything")
        finally:
            self._drained.set()  # a consumer waiting for room must see the stop too

    # -- the database's retention --------------------------------------------------------

    async def _watch_retention(self) -> None:
        """Reads the retention again every `retention_every_s`, and soon after InfluxDB
        refused a point for its age (someone shortened it)."""
        while not self.stop.is_set():
            await _first_of(
                self._retention_due, self.stop, timeout_s=self.options.retention_every_s
            )
            if self.stop.is_set():
                return
            self._retention_due.clear()
            await self._read_retention()

    async def _read_retention(self) -> None:
        """Narrows the accepted age to what InfluxDB keeps. Never raises: without the
        retention, MOCLO_MAX_READING_AGE alone applies, and InfluxDB refusing an old point
        still ends as a `beyond_retention` rejection (the sink isolates it)."""
        client = self.sink.client
        try:
            seconds = await client.retention_s()
        except InfluxUnavailable as exc:
            log.warning("could not read the retention of %s (%s); trying again in %.0f s",
                        client.database, exc, self.options.retention_every_s)  # fmt: skip
            return
        except (InfluxError, ValueError, LookupError, TypeError, AttributeError) as exc:
            if not self._retention_unknown_said:
                self._retention_unknown_said = True
                log.warning(
                    "cannot read how long InfluxDB keeps %s (%s): only MOCLO_MAX_READING_AGE "
                    "(%.1f days) bounds the age of readings; older points InfluxDB refuses are "
                    "rejected as beyond_retention. A token allowed to read buckets (2.x) "
                    "lets ingest reject them up front",
                    client.database,
                    exc,
                    self.settings.max_reading_age / 86_400,
                )
            return
        if seconds != self.retention_s:
            self.retention_s = seconds
            self.pipeline.decoder.set_retention(seconds)
            if seconds is not None and seconds < self.settings.max_reading_age:
                log.info(
                    "InfluxDB keeps %s for %.1f days: older readings are rejected as "
                    "beyond_retention (MOCLO_MAX_READING_AGE is %.1f days)",
                    client.database,
                    seconds / 86_400,
                    self.settings.max_reading_age / 86_400,
                )

    # -- health ----------------------------------------------------------------------------

    async def _watch(self) -> None:
        live = self.liveness
        while not self.stop.is_set():
            connected = self.source.connected
            if live.connected and not connected:
                live.disconnected_since = time.monotonic()
            live.connected = connected
            live.pending = self.source.pending_count
            live.influx_available = self.sink.available
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.5)

    def _http_host(self) -> str:
        return self.settings.http_listen.rpartition(":")[0]

    async def _serve_http(self) -> asyncio.Server | None:
        if self.settings.http_listen == "off":
            return None
        host, _, port = self.settings.http_listen.rpartition(":")

        def healthz() -> tuple[int, str, bytes]:
            self.liveness.connected = self.source.connected
            self.liveness.pending = self.source.pending_count
            return health_response(
                assess(self.liveness, self.spool, stall_after_s=self.options.stall_after_s)
            )

        def metrics() -> tuple[int, str, bytes]:
            return 200, "text/plain; version=0.0.4; charset=utf-8", render(self)

        server = await serve(host, int(port), {"/healthz": healthz, "/metrics": metrics})
        self.http_port = server.sockets[0].getsockname()[1]
        return server


# Payload bytes decoded between two turns of the event loop: a few milliseconds of work.
_SLICE_BYTES = 32 * 1024


class _Storing:
    """The one batch being stored while the consumer prepares the next."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._sent = asyncio.Event()

    def start(self, storing: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
        """Runs `storing(sent)`, which sets `sent` once its lines are on their way."""
        assert self._task is None, "finished() first: batches are stored one after another"
        self._sent = asyncio.Event()
        self._task = asyncio.create_task(storing(self._sent), name="store")

    async def on_its_way(self) -> None:
        """Returns once the batch's write has gone out to InfluxDB (or storing ended): from
        then on InfluxDB works on it while the consumer does something else."""
        if self._task is not None and not self._task.done() and not self._sent.is_set():
            await _first_of(self._sent, self._task)

    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def finished(self) -> None:
        """Returns once the batch is stored (at once if none is), or raises why it was not."""
        task, self._task = self._task, None
        if task is not None:
            await task

    async def abandon(self) -> None:
        """Cancels storing (when the consumer stops on an error): not acknowledged, the batch
        is delivered again."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
            if not task.cancelled() and task.exception() is not None:
                log.warning("storing the batch before failed too: %r", task.exception())


async def _first_of(
    *waitables: asyncio.Event | asyncio.Future[Any], timeout_s: float | None = None
) -> bool:
    """Waits until the first event is set or future done (or the timeout passes); True if
    the first one is done."""
    first = waitables[0]
    tasks = [
        asyncio.ensure_future(w.wait()) if isinstance(w, asyncio.Event) else w for w in waitables
    ]
    done, _ = await asyncio.wait(tasks, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    for task, waitable in zip(tasks, waitables, strict=True):
        if isinstance(waitable, asyncio.Event):
            task.cancel()
    return tasks[0] in done or (isinstance(first, asyncio.Event) and first.is_set())


def load_rulebook(settings: Settings) -> RuleBook:
    """The rules in force: the device types' defaults, with the rules file's on top."""
    if settings.rules_file is None:
        return RuleBook()
    from ingest.alerts.rulesfile import load_rules_file

    return load_rules_file(Path(settings.rules_file))


async def run_ingest(
    settings: Settings,
    stop: asyncio.Event,
    *,
    options: IngestOptions = IngestOptions(),
    stats: IngestStats | None = None,
    on_alert: AlertCallback | None = None,
    ready: asyncio.Event | None = None,
) -> IngestStats:
    """Runs ingest until `stop` is set. `ready` is set once it is subscribed."""
    return await Ingest(settings, stop, options=options, stats=stats, on_alert=on_alert).run(ready)
