"""The notifier's `/metrics` (Prometheus text) and `/healthz`, read at scrape time.

- `moclo_notifications_total{channel, outcome}`: attempts by the channel's kind (its URL's
  scheme: `mailto`, `ntfys`, `json`; never the URL, which may hold a token) and outcome
  (`sent`, `retried`: failed and tried again later, `failed`: given up);
- `moclo_notifications_escalated_total{tenant}`: escalation steps taken;
- `moclo_notifications_escalated_messages_total{channel, outcome}`: the attempts above that
  were for a later step (level 2 or more), by channel kind;
- `moclo_notify_refused_total{reason}`: messages received that were not an alert change or a
  notice (acknowledged and dropped, each logged with its reason);
- `moclo_notify_outbox{what}`: what the outbox owes (deliveries, held messages, timeline
  events not yet in InfluxDB); `moclo_notify_mqtt_connected`, `moclo_notify_influxdb_available`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.http_endpoint import Route

OUTCOMES = ("sent", "retried", "failed")


@dataclass
class NotifierStats:
    notifications: Counter[tuple[str, str]] = field(default_factory=Counter)  # (channel, outcome)
    escalated: Counter[str] = field(default_factory=Counter)  # by tenant
    # (channel, outcome) of attempts for an escalation step's people (level 2 or more)
    escalated_notifications: Counter[tuple[str, str]] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # by reason
    taken: int = 0  # alert changes and notices durably taken (and acknowledged)
    timeline_written: int = 0
    mqtt_connected: bool = False
    influx_available: bool = True


class _Collector(Collector):
    def __init__(self, stats: NotifierStats, owed: Callable[[], dict[str, int]]) -> None:
        self._stats = stats
        self._owed = owed

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        sent = CounterMetricFamily(
            "moclo_notifications",
            "notification attempts by channel kind and outcome",
            labels=["channel", "outcome"],
        )
        for (channel, outcome), count in sorted(stats.notifications.items()):
            sent.add_metric([channel, outcome], count)
        yield sent
        escalated = CounterMetricFamily(
            "moclo_notifications_escalated",
            "escalation steps taken (an alert not acknowledged in time)",
            labels=["tenant"],
        )
        for tenant, count in sorted(stats.escalated.items()):
            escalated.add_metric([tenant], count)
        yield escalated
        escalated_sent = CounterMetricFamily(
            "moclo_notifications_escalated_messages",
            "notification attempts for an escalation step's people, by channel kind and outcome",
            labels=["channel", "outcome"],
        )
        for (channel, outcome), count in sorted(stats.escalated_notifications.items()):
            escalated_sent.add_metric([channel, outcome], count)
        yield escalated_sent
        refused = CounterMetricFamily(
            "moclo_notify_refused",
            "messages received that are no alert change or notice",
            labels=["reason"],
        )
        for reason, count in sorted(stats.refused.items()):
            refused.add_metric([reason], count)
        yield refused
        yield CounterMetricFamily(
            "moclo_notify_taken", "alert changes and notices taken", value=stats.taken
        )
        yield CounterMetricFamily(
            "moclo_notify_timeline_written",
            "timeline events written to InfluxDB",
            value=stats.timeline_written,
        )
        owed = GaugeMetricFamily("moclo_notify_outbox", "what the outbox owes", labels=["what"])
        for what, count in sorted(self._owed().items()):
            owed.add_metric([what], count)
        yield owed
        yield GaugeMetricFamily(
            "moclo_notify_mqtt_connected", "1 when connected", value=int(stats.mqtt_connected)
        )
        yield GaugeMetricFamily(
            "moclo_notify_influxdb_available",
            "1 when the last timeline write reached InfluxDB",
            value=int(stats.influx_available),
        )


def routes(stats: NotifierStats, owed: Callable[[], dict[str, int]]) -> dict[str, Route]:
    """`/metrics` and `/healthz` (503 while the broker is out of reach: nothing comes in)."""

    def metrics() -> tuple[int, str, bytes]:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(stats, owed))
        return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(registry)

    def healthz() -> tuple[int, str, bytes]:
        ok = stats.mqtt_connected
        body = {
            "ok": ok,
            "status": "ok" if ok else "the MQTT broker is out of reach",
            "mqtt_connected": stats.mqtt_connected,
            "influxdb_available": stats.influx_available,
            "outbox": owed(),
        }
        return (200 if ok else 503), "application/json", orjson.dumps(body)

    return {"/metrics": metrics, "/healthz": healthz}
