"""The ingest service: wires source → decode/validate → sink, with the alert engine beside them.

For each batch: decode and validate every message, evaluate alert rules, publish the alert
changes, write readings, rejections and alert changes to InfluxDB in one request (or, while
InfluxDB is unavailable, append them to the on-disk spool and fsync), and only then acknowledge
the batch's MQTT messages. A crash anywhere before the acknowledgement means the broker delivers
the batch again; because a reading's point is keyed by its own timestamp, storing it again
overwrites instead of duplicating, and a change published again keeps its id.

Alert changes go out on MQTT (the change on `{prefix}/{tenant}/alerts/{device_id}`, the
current state retained on `{prefix}/{tenant}/alert-state/{device_id}/{rule}`) and to the
notifiers, whose queues never hold ingestion back.

`Ingest` builds the parts and runs them; each job is a module of its own: `consumer.py` (the
loop above, pipelined one batch deep), `registry_gate.py` (whose readings are accepted,
MOCLO_UNREGISTERED), `alert_state.py` (restored at start, snapshots), `durable.py` (InfluxDB
or the spool, and the spool's drainer), `retention.py` (how long InfluxDB keeps readings),
`health.py` and `http.py` (/healthz, /metrics).

Tasks, under one TaskGroup: `consume` (the loop above), `drain-spool` (spool → InfluxDB, oldest
first), `watch` (connection state for the health check), `retention` (read again now and then)
and `notify` (webhook and log); the HTTP server (/healthz, /metrics) runs beside them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from core.mqtt import MqttUnreachable, connection_login
from core.settings import Settings
from devices.topics import (
    COMMAND_REQUESTS,
    DESIRED_REQUESTS,
    DEVICE_UPLINK_LEVELS,
    acknowledgement_subscription,
    device_subscription,
    request_subscription,
    shared,
    telemetry_subscription,
)
from ingest.alert_state import AlertState
from ingest.alerts import AlertEngine
from ingest.alerts.rulebook import RuleBook
from ingest.announce import AlertPublisher
from ingest.batch_source import BatchSource
from ingest.cardinality import CardinalityGuard
from ingest.consumer import AlertCallback, Consumer, Partitions
from ingest.decode import Decoder
from ingest.downlink.outcome import is_downlink_topic
from ingest.downlink.wiring import Downlink
from ingest.durable import DurableWriter
from ingest.gcpolicy import quiet_collector
from ingest.health import Liveness, watch
from ingest.http import serve_health_and_metrics
from ingest.notify import notifiers_from
from ingest.options import IngestOptions
from ingest.pipeline import Pipeline
from ingest.registry_gate import RegistryGate
from ingest.rejections import RejectionLog
from ingest.retention import RetentionWatch
from ingest.rules_in_force import load_automations, load_rulebook
from ingest.sink import InfluxSink
from ingest.source import MqttSource
from ingest.spool import Spool
from ingest.stats import IngestStats
from storage.influx import InfluxClient

if TYPE_CHECKING:
    from ingest.control import Control

log = logging.getLogger("moclo.ingest")

_DEFAULTS = IngestOptions()  # frozen, so one instance serves every default


def judges_alerts(settings: Settings) -> bool:
    """An ingest in a share group sees only some of each device's readings (the broker deals
    messages to the group's members in turn), so rules that follow a device over time would
    judge from fragments: it stores and validates, and judges no rules."""
    return settings.ingest_share_group is None


def subscriptions(settings: Settings) -> tuple[str, ...]:
    """Telemetry (and acknowledgements and the downlink, where alerts are judged) of all
    tenants or of MOCLO_INGEST_TENANTS; in a share group, telemetry only, shared."""
    prefix = settings.topic_prefix
    tenants = settings.tenants or ("+",)
    telemetry = tuple(telemetry_subscription(prefix, t) for t in tenants)
    if settings.ingest_share_group is not None:
        return tuple(shared(settings.ingest_share_group, s) for s in telemetry)
    downlink = tuple(
        subscription
        for t in tenants
        for subscription in (
            *(device_subscription(prefix, level, t) for level in DEVICE_UPLINK_LEVELS),
            request_subscription(prefix, COMMAND_REQUESTS, t),
            request_subscription(prefix, DESIRED_REQUESTS, t),
        )
    )
    return (*telemetry, *(acknowledgement_subscription(prefix, t) for t in tenants), *downlink)


class Ingest:
    def __init__(
        self,
        settings: Settings,
        stop: asyncio.Event,
        *,
        options: IngestOptions = _DEFAULTS,
        stats: IngestStats | None = None,
        on_alert: AlertCallback | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.stop = stop
        self.stats = stats or IngestStats()
        self.liveness = Liveness()
        self.sink = InfluxSink(
            InfluxClient(
                settings.influx_url, settings.influx_db, token=settings.influx_token_value
            ),
            stopping=stop,
        )
        self.source = _source(settings, options)
        # Its own login (`USER~alerts`, same password): on a broker that names connections by
        # their login, a second connection as USER would take the consumer's session.
        self.announcer = AlertPublisher(
            settings.mqtt.for_connection("alerts"),
            client_id=connection_login(settings.ingest_id, "alerts"),
            prefix=settings.topic_prefix,
            mqtt311=settings.engine_url is not None,  # RabbitMQ 3.10 drops MQTT 5 clients
        )
        self.spool = Spool(
            Path(settings.spool_dir) / settings.ingest_id, max_bytes=options.spool_max_bytes
        )
        self.snapshot_path = self.spool.directory / "alert-state.json"
        self.webhook, self.notifiers = notifiers_from(settings, log_alerts=options.log_alerts)
        self.gate = RegistryGate(settings)
        self.registered = self.gate.registered  # for /metrics
        # The command gateway (ingest/downlink/), where ingest sees whole tenants: a share
        # group member sees a deal of the readings and none of the downlink. On the engine,
        # it works for the worker that holds the control queue (ingest/control.py).
        self.downlink = Downlink(settings) if judges_alerts(settings) else None
        self.pipeline = _pipeline(settings, options, self.gate, self.downlink)
        self.alert_state = _alert_state(settings, self)
        self.control = _control(settings, self)
        self.retention = RetentionWatch(
            self.sink.client,
            self.pipeline.decoder,
            max_reading_age=settings.max_reading_age,
            every_s=options.retention_every_s,
        )
        self.durable = DurableWriter(
            self.sink,
            self.spool,
            self.pipeline,
            self.stats,
            stop=stop,
            beyond_retention=self.retention.due.set,
        )
        self.consumer = self._consumer(on_alert)
        self.http_port: int | None = None

    def _consumer(self, on_alert: AlertCallback | None) -> Consumer:
        """The consume loop, given every part it moves a batch through."""
        return Consumer(
            source=self.source,
            pipeline=self.pipeline,
            gate=self.gate,
            alert_state=self.alert_state,
            durable=self.durable,
            announcer=self.announcer,
            notifiers=self.notifiers,
            stats=self.stats,
            liveness=self.liveness,
            options=self.options,
            stop=self.stop,
            on_alert=on_alert,
            downlink=self.downlink,
            partitions=self.alert_state if isinstance(self.alert_state, Partitions) else None,
            control=self.control,
        )

    @property
    def retention_s(self) -> float | None:
        """What InfluxDB keeps, as last read (None: everything)."""
        return self.retention.retention_s

    async def run(self, ready: asyncio.Event | None = None) -> IngestStats:
        """Runs until `stop` is set; then finishes what it holds and returns."""
        try:
            await self.sink.client.ensure_database()
            await self.retention.read()
            await self.gate.load()
            orphans = await self.alert_state.restore(self.sink.client, self.spool)
            self.stats.open_alerts = self.pipeline.engine.open_alerts()
            if orphans:
                await self.durable.write([alert.to_line() for alert in orphans])
            await self.announcer.start()
            await self._start_downlink()
            await self.source.start()
            if orphans:
                await self.consumer.announce(orphans)  # once connected
            server = await serve_health_and_metrics(
                self.settings.http_listen, self, stall_after_s=self.options.stall_after_s
            )
            if server is not None:
                self.http_port = server.sockets[0].getsockname()[1]
            self._say_what_runs()
            if ready is not None:
                ready.set()
            try:
                with quiet_collector(enabled=self.options.quiet_gc):
                    async with asyncio.TaskGroup() as tasks:
                        tasks.create_task(self.consumer.run(), name="consume")
                        tasks.create_task(self.durable.drain(), name="drain-spool")
                        tasks.create_task(
                            watch(self.liveness, self.source, self.sink, self.stop), name="watch"
                        )
                        tasks.create_task(self.retention.run(self.stop), name="retention")
                        tasks.create_task(self.notifiers.run(self.consumer.consumed), name="notify")
            finally:
                if server is not None:
                    server.close()
            await self.alert_state.save(unstored=self.consumer.unstored > 0)
        finally:
            await self.source.close()
            await self.announcer.close()
            if self.downlink is not None:
                await self.downlink.close()
            await self.sink.close()
            self.gate.close()
        return self.stats

    async def _start_downlink(self) -> None:
        """Restores the gateway and connects its publisher; a broker whose files predate the
        `~commands` login costs the downlink, said once, not the readings."""
        if self.downlink is None:
            return
        if self.control is None:  # on the engine, the control queue's owner restores it
            await self.downlink.restore(self.sink.client)
        try:
            await self.downlink.start(send_pending=self.control is None)
        except MqttUnreachable as exc:
            login = connection_login(self.settings.mqtt.username or "USER", "commands")
            advice = (  # on the engine, RabbitMQ asks `moclo engine-auth`, which reads the registry
                f"check that the registry lists the login {login} and that `moclo engine-auth` "
                "runs, then restart this worker (it leaves the control queue to the others)"
                if self.control is not None
                else f"regenerate the broker's files (`moclo broker-auth write`) so they list "
                f"the login {login}, and reload the broker"
            )
            log.error("commands and desired state are off: %s. To fix it, %s", exc, advice)
            if self.control is not None:  # the gateway cannot send here: another worker runs it
                self.control.source.consumes_control = False
            self.pipeline.gateway = None
            self.pipeline.decoder.downlink = None  # their topics are rejected, as before
            self.consumer.downlink = None
            if self.control is not None:
                self.control.downlink = None
            await self.downlink.close()
            self.downlink = None

    def _say_what_runs(self) -> None:
        """The start-up lines: where from, where to, and what is judged."""
        log.info(
            "ingesting %s from %s into %s db=%s%s",
            self.source.subscription,
            self.settings.engine_url or self.settings.mqtt.display(),
            self.sink.client.url,
            self.settings.influx_db,
            f"; health on http://{self.settings.http_listen.rpartition(':')[0]}:"
            f"{self.http_port}/healthz"
            if self.http_port
            else "",
        )
        if not self.spool.is_empty():
            log.info("spool holds %d batches from before; writing them first", self.spool.records)
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


def _alert_state(settings: Settings, ingest: Ingest) -> AlertState:
    """One snapshot for the whole engine, or on the distributed engine one per partition,
    in a folder the workers share (docs/scale.md)."""
    if settings.engine_url is None:
        return AlertState(ingest.snapshot_path, ingest.pipeline)
    from ingest.engine_wiring import partition_state  # pika only where the engine is used

    return partition_state(
        settings, ingest.pipeline, ingest.source, ingest.sink.client, ingest.spool
    )


def _control(settings: Settings, ingest: Ingest) -> Control | None:
    """On the engine, the gateway, automations and acknowledgements of the control queue."""
    if settings.engine_url is None or ingest.downlink is None:
        return None
    from ingest.engine_wiring import control  # pika only where the engine is used

    automations = load_automations(settings, ingest.pipeline.engine.rulebook)
    parts = (ingest.pipeline, ingest.source, ingest.downlink, ingest.sink.client)
    return control(settings, *parts, automations)


def _source(settings: Settings, options: IngestOptions) -> BatchSource:
    """The MQTT source (ingest's subscriptions), or the engine's partitions with
    MOCLO_ENGINE_URL, with the batch and window sizes of `options`."""
    if settings.engine_url is not None:
        from ingest.engine_wiring import engine_source  # pika only where the engine is used

        return engine_source(settings, options)
    return MqttSource(
        settings.mqtt,
        client_id=settings.ingest_id,
        subscription=subscriptions(settings),
        batch_messages=options.batch_messages,
        batch_bytes=options.batch_bytes,
        window=options.window,
        window_bytes=options.window_bytes,
        stock_client=options.stock_mqtt_client,
    )


def _pipeline(
    settings: Settings, options: IngestOptions, gate: RegistryGate, downlink: Downlink | None
) -> Pipeline:
    """Decode and validate (behind the registry gate), judge the rules, count rejections and
    new devices, hand the downlink to the gateway: the stages a message passes between source
    and sink."""
    # MOCLO_MAX_READING_AGE is the oldest accepted; the database's retention, once read,
    # may narrow it (`ingest/retention.py`).
    limits = replace(options.limits, max_past_s=settings.max_reading_age)
    judging = options.alert_rules and judges_alerts(settings)
    rulebook = load_rulebook(settings) if judging else RuleBook.empty()
    return Pipeline(
        Decoder(
            settings.topic_prefix,
            limits=limits,
            registered=gate.registered,
            unregistered="flag" if settings.unregistered == "flag" else "reject",
            downlink=is_downlink_topic if downlink is not None else None,
        ),
        AlertEngine(rulebook),
        RejectionLog(),
        CardinalityGuard(burst=limits.new_devices_burst, per_minute=limits.new_devices_per_minute),
        gateway=downlink.gateway if downlink is not None else None,
        # On the engine, the control queue's owner runs them (ingest/control.py).
        automations=load_automations(settings, rulebook)
        if downlink is not None and settings.engine_url is None
        else None,
    )


async def run_ingest(
    settings: Settings,
    stop: asyncio.Event,
    *,
    options: IngestOptions = _DEFAULTS,
    stats: IngestStats | None = None,
    on_alert: AlertCallback | None = None,
    ready: asyncio.Event | None = None,
) -> IngestStats:
    """Runs ingest until `stop` is set. `ready` is set once it is subscribed."""
    return await Ingest(settings, stop, options=options, stats=stats, on_alert=on_alert).run(ready)
