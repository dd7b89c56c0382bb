"""The consumer: MQTT batches in, decoded and judged, stored, then acknowledged.

Batches are pipelined, one deep: while batch k is being stored (its alert changes published,
its lines written, its messages acknowledged) the consumer decodes and judges batch k+1, in
slices that give the event loop back between them. Batch k+1 is stored only once batch k is,
so changes are published, lines written and messages acknowledged in arrival order, and a batch
that fails to be stored stops everything after it unacknowledged. Between batches it refreshes
the registry, sweeps for silent devices and gives the alert-state snapshot a slice, each only
once nothing judged is unstored where that matters.

This is the hot path: no await or allocation per message beyond what storing a batch needs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ingest.alert_state import AlertState
from ingest.announce import AlertPublisher
from ingest.batch_source import BatchSource
from ingest.downlink.wiring import Downlink
from ingest.durable import DurableWriter
from ingest.health import Liveness
from ingest.notify import Notifiers
from ingest.options import IngestOptions
from ingest.pipeline import Pipeline, PreparedBatch
from ingest.registry_gate import RegistryGate
from ingest.sink import WriteAborted
from ingest.source import Message
from ingest.stats import IngestStats
from ingest.waits import first_of
from storage.alert_record import Alert

if TYPE_CHECKING:  # pika only where the engine is used
    from ingest.control import Control

log = logging.getLogger("moclo.ingest")

AlertCallback = Callable[[Alert], None]


@runtime_checkable
class Partitions(Protocol):
    """On the distributed engine: whose devices this worker judges (ingest/partition_state.py)."""

    async def admit(self, messages: list[Message]) -> None:
        """Takes over the partitions of `messages` not held yet, before they are judged."""

    def let_go(self) -> None:
        """Forgets the devices of partitions no longer held."""

    def take_orphans(self) -> list[Alert]:
        """Resolutions of stored open alerts whose rule is gone, found while taking over."""


class Consumer:
    def __init__(
        self,
        *,
        source: BatchSource,
        pipeline: Pipeline,
        gate: RegistryGate,
        alert_state: AlertState,
        durable: DurableWriter,
        announcer: AlertPublisher,
        notifiers: Notifiers,
        stats: IngestStats,
        liveness: Liveness,
        options: IngestOptions,
        stop: asyncio.Event,
        on_alert: AlertCallback | None,
        downlink: Downlink | None = None,
        partitions: Partitions | None = None,
        control: Control | None = None,
    ) -> None:
        self.source = source
        self.pipeline = pipeline
        self.gate = gate
        self.alert_state = alert_state
        self.durable = durable
        self.announcer = announcer
        self.notifiers = notifiers
        self.stats = stats
        self.liveness = liveness
        self.options = options
        self.stop = stop
        self.on_alert = on_alert
        self.downlink = downlink
        self.partitions = partitions
        self.control = control  # on the engine: the control queue's work (ingest/control.py)
        self.consumed = asyncio.Event()  # the consumer is done: notifiers may finish
        self.unstored = 0  # batches the engine has judged and that are not stored yet

    async def run(self) -> None:
        """Consumes until `stop` is set, then stores what had arrived by then."""
        options = self.options
        next_summary = time.monotonic() + options.summary_every_s
        next_sweep = time.monotonic() + max(options.sweep_every_s, 5.0)
        next_snapshot = time.monotonic() + options.snapshot_every_s
        storing = _Storing()  # the batch before, being stored
        alert_state = self.alert_state
        try:
            downlink = self.downlink
            while not self.stop.is_set():
                await self.gate.refresh(self.pipeline.decoder)
                if downlink is not None:
                    await downlink.refresh()
                if storing.done():
                    await storing.finished()  # raises what storing it raised
                messages = await self._next_batch_or_stop(options.sweep_every_s)
                if messages and self.control is not None:
                    messages, orders = self.control.split(messages)
                    if orders := self.control.settle_probes(orders):
                        await storing.finished()
                        await self._control(orders)
                if messages and self.partitions is not None:
                    await self.partitions.admit(messages)
                    if orphans := self.partitions.take_orphans():
                        await storing.finished()
                        await self._resolve_orphans(orphans)
                if messages:
                    prepared = await self._prepare(messages, after=storing)
                    await storing.finished()
                    storing.start(functools.partial(self._store, messages, prepared))
                # Silence is judged only once the backlog is in: a device whose readings are
                # still queued at the broker is not silent.
                caught_up = not messages or self.source.caught_up
                # The sweep and the expiry are judged now, on what has been judged so far, and
                # stored after the batch in flight without waiting for it here: decoding the
                # next batch keeps overlapping that batch's write.
                if caught_up and time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + options.sweep_every_s
                    if self.partitions is not None:
                        # A partition let go may be taken over at once by another worker,
                        # which must find what was judged for it stored.
                        await storing.finished()
                        self.partitions.let_go()  # no silence judged for another's devices
                    storing.then(self._sweep())
                if downlink is not None and self._gateway_ticks() and downlink.expiry_due():
                    storing.then(self._expire(downlink))
                if not alert_state.capturing and time.monotonic() >= next_snapshot:
                    await alert_state.begin()  # once the previous one is written
                    next_snapshot = time.monotonic() + options.snapshot_every_s
                if alert_state.capturing:
                    # Only what is stored may be in a snapshot.
                    await storing.finished()
                    # A slice per turn, longer when idle, so consuming never stalls on it.
                    alert_state.step(budget_s=0.01 if messages else 0.2)
                if time.monotonic() >= next_summary:
                    next_summary = time.monotonic() + self.options.summary_every_s
                    if (summary := self.pipeline.rejections.summary()) is not None:
                        log.info("%s", summary)
            await storing.finished()
            await self._store_pending()
        except WriteAborted:
            log.warning(
                "stopped while InfluxDB is unavailable and the spool is full; "
                "unacknowledged messages will be delivered again"
            )
        finally:
            # Only when the consumer fails or is cancelled: the batch being stored is not
            # acknowledged, so the broker delivers it again.
            await storing.abandon()
            self.durable.writers_done()  # let the drainer see the stop
            self.consumed.set()

    def _gateway_ticks(self) -> bool:
        """On the engine only the control queue's owner settles commands (ingest/control.py)."""
        return self.control is None or self.control.owner

    async def _control(self, messages: list[Message]) -> None:
        """The control queue's deliveries: what they caused stored, acknowledgements sent on to
        their partitions, commands published; then acknowledged."""
        assert self.control is not None
        batch = await self.control.prepare(messages)
        prepared = batch.prepared
        self.unstored += 1
        await self._commit(prepared.lines, prepared.alerts)
        self.unstored -= 1
        if batch.forwards and not await self.control.forward(batch.forwards):
            return  # not acknowledged: they come again on the next connection
        if prepared.publications and self.control.downlink is not None:
            await self.control.downlink.publish(prepared.publications)
        self.source.ack(batch.messages)
        self.stats.messages += len(batch.messages)
        self.stats.rejected += len(prepared.rejections)
        self.stats.rejected_by_reason.update(r.reason.value for r in prepared.rejections)

    async def _store_pending(self) -> None:
        """Stopping: handles what had arrived when the stop came, so it is acknowledged now
        rather than delivered again later; no more, since every acknowledgement lets the
        broker send another message."""
        remaining = self.source.pending_count
        while remaining > 0 and (messages := self.source.take_pending(remaining)):
            remaining -= len(messages)
            if self.control is not None:
                messages, orders = self.control.split(messages)
                if orders:
                    await self._control(orders)
                if not messages:
                    continue
            if self.partitions is not None:
                await self.partitions.admit(messages)
            await self._store(messages, await self._prepare(messages))

    async def _resolve_orphans(self, orphans: list[Alert]) -> None:
        """Stores and announces the resolutions of alerts whose rule is gone."""
        self.unstored += 1
        await self._commit([alert.to_line() for alert in orphans], orphans)
        self.unstored -= 1

    def _sweep(self) -> Callable[[], Coroutine[Any, Any, None]]:
        """Judges silent devices now; returns what stores and announces the alerts that
        raises (to run once what was judged before is stored)."""
        self.unstored += 1
        swept = self.pipeline.sweep()

        async def store() -> None:
            if swept.alerts:
                await self._commit(swept.lines, swept.alerts)
            self.unstored -= 1
            if swept.publications and self.downlink is not None:
                await self.downlink.publish(swept.publications)  # what automations did

        return store

    def _expire(self, downlink: Downlink) -> Callable[[], Coroutine[Any, Any, None]]:
        """Settles the commands whose expiry passed now; returns what stores, then announces
        them (to run once what was judged before is stored)."""
        batch = PreparedBatch()
        self.pipeline.add_downlink(batch, downlink.expire())
        self.pipeline.react(batch)
        batch.lines.extend(alert.to_line() for alert in batch.alerts)  # desired_not_applied
        self.unstored += 1

        async def store() -> None:
            await self._commit(batch.lines, batch.alerts)
            self.unstored -= 1
            if batch.publications:
                await downlink.publish(batch.publications)

        return store

    async def _next_batch_or_stop(self, timeout_s: float) -> list[Message]:
        """The next batch; [] when `stop` is set or nothing came within `timeout_s`."""
        batch = asyncio.ensure_future(self.source.next_batch(linger_s=self.options.linger_s))
        if not await first_of(batch, self.stop, timeout_s=timeout_s):
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
        self.unstored += 1
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
            prepared.publications += part.publications
            start = end
            if start < len(messages):
                await asyncio.sleep(0)
        if self.gate.flags:
            prepared.lines.extend(self.gate.unregistered_lines(self.pipeline.decoder))
        return prepared

    async def _store(
        self, messages: list[Message], prepared: PreparedBatch, sent: asyncio.Event | None = None
    ) -> None:
        """Publishes the batch's alert changes, stores its lines, then acknowledges it. `sent`
        is set once the lines are on their way to InfluxDB."""
        await self._commit(prepared.lines, prepared.alerts, sent)
        self.unstored -= 1
        if prepared.publications and self.downlink is not None:
            # Recorded first, then sent: no command reaches a device unrecorded.
            await self.downlink.publish(prepared.publications)
        self.source.ack(messages)
        stats = self.stats
        self.liveness.last_handled = time.monotonic()
        stats.messages += len(messages)
        stats.rejected += len(prepared.rejections)
        stats.rejected_by_reason.update(r.reason.value for r in prepared.rejections)

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
            await self.announce(alerts)
        if lines:
            await self.durable.write(lines, sent)

    async def announce(self, alerts: list[Alert]) -> None:
        """Counts, notifies and publishes alert changes (the `alerts` and `alert-state`
        topics); a broker slow to confirm is said, never waited for past 10 s."""
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
            await first_of(self._sent, self._task)

    def then(self, step: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Runs `step` once the batch being stored is (at once if none is), without waiting
        for either here: stores stay in order, and a failure of the one before skips `step`
        and is raised by `finished()`."""
        before = self._task

        async def after_before() -> None:
            if before is not None:
                await before
            await step()

        self._task = asyncio.create_task(after_before(), name="store")

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
