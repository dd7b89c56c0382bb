"""`/metrics`: the service's counters in the Prometheus text format, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from access.known import RegisteredDevices
from ingest.batch_source import BatchSource
from ingest.health import Liveness
from ingest.notify import WebhookNotifier
from ingest.pipeline import Pipeline
from ingest.sink import InfluxSink
from ingest.spool import Spool
from ingest.stats import IngestStats


class Observed(Protocol):
    """What a scrape reads: the parts of the running service that count (the service itself
    is one, but this module need not know it)."""

    @property
    def stats(self) -> IngestStats: ...
    @property
    def liveness(self) -> Liveness: ...
    @property
    def source(self) -> BatchSource: ...
    @property
    def pipeline(self) -> Pipeline: ...
    @property
    def registered(self) -> RegisteredDevices | None: ...
    @property
    def webhook(self) -> WebhookNotifier | None: ...
    @property
    def sink(self) -> InfluxSink: ...
    @property
    def spool(self) -> Spool: ...


class _IngestCollector(Collector):
    def __init__(self, ingest: Observed) -> None:
        self._ingest = ingest

    def collect(self) -> Iterator[Metric]:
        # One family of metrics a function, in the order they have always been exposed.
        yield from _messages(self._ingest)
        yield from _alerts(self._ingest)
        yield from _writes(self._ingest)
        yield from _state(self._ingest)


def _messages(ingest: Observed) -> Iterator[Metric]:
    """Messages in, readings stored or spooled, rejections, the registry."""
    stats = ingest.stats
    yield _counter(
        "moclo_messages_received", "MQTT messages received", ingest.source.messages_received
    )
    yield _counter(
        "moclo_messages_handled", "MQTT messages stored and acknowledged", stats.messages
    )
    yield _counter("moclo_readings_stored", "readings written to InfluxDB", stats.readings_stored)
    yield _counter(
        "moclo_readings_spooled",
        "readings written to the on-disk spool",
        stats.readings_spooled,
    )
    rejected = CounterMetricFamily("moclo_rejected", "rejections by reason", labels=["reason"])
    for reason, count in sorted(ingest.pipeline.rejections.counts.items()):
        rejected.add_metric([reason], count)
    yield rejected
    if ingest.registered is not None:
        yield _gauge(
            "moclo_registered_devices",
            "active devices in the registry",
            len(ingest.registered),
        )
        yield _counter(
            "moclo_unregistered_messages",
            "messages of unregistered devices stored anyway (MOCLO_UNREGISTERED=flag)",
            ingest.pipeline.decoder.unregistered_messages,
        )


def _alerts(ingest: Observed) -> Iterator[Metric]:
    """Alert changes, and what the webhook made of them."""
    stats = ingest.stats
    alerts = CounterMetricFamily("moclo_alerts", "alert changes", labels=["state"])
    alerts.add_metric(["raised"], stats.alerts_raised)
    alerts.add_metric(["acknowledged"], stats.alerts_acknowledged)
    alerts.add_metric(["resolved"], stats.alerts_resolved)
    yield alerts
    webhook = ingest.webhook
    if webhook is not None:
        sent = CounterMetricFamily(
            "moclo_webhook_notifications",
            "alert changes for the webhook, by outcome",
            labels=["outcome"],
        )
        for outcome in ("sent", "failed", "dropped", "skipped"):
            sent.add_metric([outcome], getattr(webhook.stats, outcome))
        yield sent
        yield _counter("moclo_webhook_retries", "webhook retries", webhook.stats.retries)
        yield _gauge("moclo_webhook_queued", "alert changes waiting", webhook.queued)


def _writes(ingest: Observed) -> Iterator[Metric]:
    """Writes to InfluxDB: batches, retries, latency."""
    stats = ingest.stats
    yield _counter("moclo_batches_written", "batches written", stats.batches_written)
    yield _counter("moclo_write_retries", "InfluxDB write retries", ingest.sink.retries)
    latency = ingest.sink.latency
    yield HistogramMetricFamily(
        "moclo_write_duration_seconds",
        "InfluxDB write latency",
        buckets=latency.cumulative(),
        sum_value=latency.total_s,
    )


def _state(ingest: Observed) -> Iterator[Metric]:
    """The connections, what is pending, open alerts and the spool, as they stand."""
    stats, live = ingest.stats, ingest.liveness
    yield _gauge("moclo_mqtt_connected", "1 when connected to the broker", int(live.connected))
    yield _gauge(
        "moclo_influxdb_available",
        "1 when the last write reached InfluxDB",
        int(live.influx_available),
    )
    yield _gauge(
        "moclo_pending_messages",
        "received, not yet handled (consumer lag)",
        ingest.source.pending_count,
    )
    yield _gauge(
        "moclo_pending_bytes",
        "payload of those messages (bounded by the window's bytes)",
        ingest.source.pending_bytes,
    )
    yield _gauge("moclo_open_alerts", "alert episodes open", stats.open_alerts)
    yield _gauge("moclo_spool_bytes", "bytes in the on-disk spool", ingest.spool.size_bytes)
    yield _gauge("moclo_spool_records", "batches in the on-disk spool", ingest.spool.records)
    yield _gauge(
        "moclo_spool_oldest_age_seconds",
        "age of the oldest spooled batch",
        ingest.spool.oldest_age_s(),
    )


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def render(ingest: Observed) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_IngestCollector(ingest))
    return generate_latest(registry)
