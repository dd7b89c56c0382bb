"""The ingest service: wires source → decode/validate → sink, with the alert engine beside them.

For each batch: decode and validate every message, evaluate alert rules, write readings,
rejections and alert changes to InfluxDB in one request, publish the alert changes, and only
then acknowledge the batch's MQTT messages. A crash anywhere before the acknowledgement means
the broker delivers the batch again, and because a reading's point is keyed by its own
timestamp, storing it again overwrites instead of duplicating.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from devices.topics import alert_topic, telemetry_subscription
from ingest.alerts import Alert, AlertEngine
from ingest.decode import DEFAULT_MAX_PAYLOAD_BYTES, Decoder
from ingest.influx import InfluxClient
from ingest.pipeline import Pipeline, PreparedBatch
from ingest.rejections import RejectionLog
from ingest.sink import InfluxSink, WriteAborted
from ingest.source import Message, MqttSource
from moclo.settings import Settings

log = logging.getLogger("moclo.ingest")


@dataclass(frozen=True, slots=True)
class IngestOptions:
    batch_messages: int = 2_000  # messages per InfluxDB write, at most
    linger_s: float = 0.1  # how long a non-full batch waits for more messages
    window: int = 10_000  # unacknowledged messages the broker may send us (Receive Maximum)
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    summary_every_s: float = 30.0  # how often rejection counts are logged, when they changed


@dataclass(slots=True)
class IngestStats:
    messages: int = 0
    readings_stored: int = 0
    rejected: int = 0
    alerts_raised: int = 0
    alerts_resolved: int = 0
    batches_written: int = 0
    open_alerts: int = 0
    started_at: float = field(default_factory=time.monotonic)


AlertCallback = Callable[[Alert], None]


async def run_ingest(
    settings: Settings,
    stop: asyncio.Event,
    *,
    options: IngestOptions = IngestOptions(),
    stats: IngestStats | None = None,
    on_alert: AlertCallback | None = None,
    ready: asyncio.Event | None = None,
) -> IngestStats:
    """Runs until `stop` is set, then finishes the batch in hand and returns.

    `ready` is set once the database exists and the subscription is acknowledged.
    """
    stats = stats or IngestStats()
    client = InfluxClient(
        settings.influx_url, settings.influx_db, token=settings.influx_token_value
    )
    sink = InfluxSink(client, stopping=stop)
    source = MqttSource(
        settings.mqtt,
        client_id=settings.ingest_client_id,
        subscription=telemetry_subscription(settings.topic_prefix),
        batch_messages=options.batch_messages,
        window=options.window,
    )
    pipeline = Pipeline(
        Decoder(settings.topic_prefix, max_payload_bytes=options.max_payload_bytes),
        AlertEngine(),
        RejectionLog(),
    )
    try:
        await client.ensure_database()
        await source.start()
        log.info(
            "ingesting %s from %s into %s db=%s",
            source.subscription,
            settings.mqtt.display(),
            client.url,
            settings.influx_db,
        )
        if ready is not None:
            ready.set()
        next_summary = time.monotonic() + options.summary_every_s
        while not stop.is_set():
            messages = await _next_batch_or_stop(source, stop, options.linger_s)
            if not messages:
                continue
            try:
                await _store(messages, pipeline, sink, source, settings, stats, on_alert)
            except WriteAborted:
                log.warning(
                    "stopping with %d messages not stored; the broker will deliver them again",
                    len(messages),
                )
                break
            if time.monotonic() >= next_summary:
                next_summary = time.monotonic() + options.summary_every_s
                if (summary := pipeline.rejections.summary()) is not None:
                    log.info("%s", summary)
    finally:
        await source.close()
        await sink.close()
    return stats


async def _next_batch_or_stop(
    source: MqttSource, stop: asyncio.Event, linger_s: float
) -> list[Message]:
    batch = asyncio.ensure_future(source.next_batch(linger_s=linger_s))
    stopped = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({batch, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if batch in done:
        return batch.result()
    # Stopping: a batch still being gathered was not taken from the source, so nothing is lost.
    batch.cancel()
    return []


async def _store(
    messages: list[Message],
    pipeline: Pipeline,
    sink: InfluxSink,
    source: MqttSource,
    settings: Settings,
    stats: IngestStats,
    on_alert: AlertCallback | None,
) -> None:
    prepared = pipeline.prepare(messages)
    refused = await sink.write_batch(prepared.lines) if prepared.lines else []
    stored = prepared.readings
    for line in refused:
        origin = prepared.origins[line.index]
        if origin is None:
            # Our own rejection and alert lines are formatted from validated values; InfluxDB
            # refusing one is a bug worth shouting about, not a device's fault.
            log.error(
                "InfluxDB refused an internal line: %s (%s)",
                prepared.lines[line.index][:200],
                line.error,
            )
            continue
        stored -= 1
        extra: PreparedBatch = pipeline.refused(origin, line.error, time.time_ns())
        stats.rejected += 1
        await sink.write_batch(extra.lines)
    for alert in prepared.alerts:
        source.publish(
            alert_topic(settings.topic_prefix, alert.tenant, alert.device_id),
            alert.to_json(),
            qos=1,
        )
        if alert.state == "raised":
            stats.alerts_raised += 1
        else:
            stats.alerts_resolved += 1
        if on_alert is not None:
            on_alert(alert)
    source.ack(messages)
    stats.messages += len(messages)
    stats.readings_stored += stored
    stats.rejected += len(prepared.rejections)
    stats.batches_written += 1
    stats.open_alerts = pipeline.engine.open_alerts()
