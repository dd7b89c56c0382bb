"""Alerts for people: which are open, which episodes a device had in a time range, and a
published change read back. Shared by `moclo alerts`, the HTTP API and the dashboard.

The stored form is `ALERTS` of `storage/schema.py` (one point per change, see
`storage/alert_record.py`); the
published form is `Alert.to_json`. Both are read here, so the CLI and the API cannot disagree
on what "open" means.
"""

from __future__ import annotations

from dataclasses import dataclass

from devices.rfc3339 import format_us
from devices.rule_base import SEVERITIES, Severity, format_seconds
from storage.alert_history import latest_changes, raised_since
from storage.alert_record import Alert, AlertState, StoredChange
from storage.influx import InfluxClient, influxql_literal
from storage.schema import ALERT_ID, ALERTS, DEVICE_ID, STATE, TENANT

_NS = 1_000_000_000
SEVERITY_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """Which alerts to show; every field narrows, None/defaults mean all."""

    tenant: str | None = None
    device_id: str | None = None
    min_severity: Severity = "info"
    since_s: float | None = None  # raised within this long before now
    include_resolved: bool = False

    def admits(self, alert: Alert) -> bool:
        """Tenant, device and severity; the state and `since_s` are the caller's to judge."""
        return (
            (self.tenant is None or alert.tenant == self.tenant)
            and (self.device_id is None or alert.device_id == self.device_id)
            and SEVERITY_RANK.get(alert.severity, 0) >= SEVERITY_RANK[self.min_severity]
        )

    def scope(self) -> str:
        """` (for tenant farm, device cow-9, warning or critical, raised in the last 6h)`."""
        parts = []
        if self.tenant:
            parts.append(f"tenant {self.tenant}")
        if self.device_id:
            parts.append(f"device {self.device_id}")
        if self.min_severity == "warning":
            parts.append("warning or critical")
        elif self.min_severity == "critical":
            parts.append("critical only")
        if self.since_s is not None:
            parts.append(f"raised in the last {format_seconds(self.since_s)}")
        return f" (for {', '.join(parts)})" if parts else ""


async def current_alerts(
    client: InfluxClient, query: AlertFilter, *, now_ns: int
) -> tuple[list[Alert], set[str] | None]:
    """The alerts `query` admits, critical first, then the newest (by first seen); and, with
    `since_s`, the ids of the episodes raised in that window, so a live stream can apply the same
    filter."""
    since_ns = None if query.since_s is None else now_ns - int(query.since_s * _NS)
    # The tenant and the window narrow the query itself; device and severity are judged here.
    changes = await latest_changes(client, tenant=query.tenant, since_ns=since_ns)
    raised = None
    if since_ns is not None:
        raised = set(await raised_since(client, since_ns, tenant=query.tenant))
    alerts = [
        alert
        for alert in (change.as_alert() for change in changes)
        if query.admits(alert)
        and (query.include_resolved or alert.state != "resolved")
        and (raised is None or alert.alert_id in raised)
    ]
    alerts.sort(key=alert_order)
    return alerts, raised


def alert_order(alert: Alert) -> tuple[int, int, int, str]:
    """The order of a list of alerts: critical first, then the newest (by first seen)."""
    return (
        -SEVERITY_RANK.get(alert.severity, 0),
        -alert.first_seen_ns,
        -alert.ts_ns,
        alert.alert_id,
    )


@dataclass(frozen=True, slots=True)
class Episode:
    """One alert from raise to resolve (or still open), for marking on a chart."""

    alert_id: str
    rule: str
    severity: Severity
    state: AlertState  # the latest: raised, acknowledged or resolved
    start_ns: int  # when it was raised, in reading time
    end_ns: int | None  # when it was resolved; None while open
    message: str  # the raising message
    value: float  # the value that raised it

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.alert_id,
            "rule": self.rule,
            "severity": self.severity,
            "state": self.state,
            "start": format_us(self.start_ns),
            "end": None if self.end_ns is None else format_us(self.end_ns),
            "message": self.message,
            "value": self.value,
        }


async def device_episodes(
    client: InfluxClient, *, tenant: str, device_id: str, start_ns: int, end_ns: int
) -> list[Episode]:
    """The episodes of one device that overlap [start_ns, end_ns), oldest first.

    The changes inside the range, plus the episodes still open when it starts (their latest
    change is older); an episode whose raise lies before the range has it looked up by id, so
    the episode starts where it really started.
    """
    where = (
        f'"{TENANT}" = {influxql_literal(tenant)} '
        f'AND "{DEVICE_ID}" = {influxql_literal(device_id)} '
        f"AND time >= {int(start_ns)} AND time < {int(end_ns)}"
    )
    in_range = await _stored_changes(client, where)
    # Episodes open when the range starts have their latest change before it.
    before = [
        c
        for c in await latest_changes(client, tenant=tenant)
        if c.device_id == device_id and c.ts_ns < start_ns and c.state != "resolved"
    ]
    by_id: dict[str, list[StoredChange]] = {}
    for change in (*before, *in_range):
        by_id.setdefault(change.alert_id, []).append(change)
    missing_raise = [i for i, cs in by_id.items() if not any(c.state == "raised" for c in cs)]
    if missing_raise:
        ids = " OR ".join(f'"{ALERT_ID}" = {influxql_literal(i)}' for i in missing_raise)
        for change in await _stored_changes(client, f"\"{STATE}\" = 'raised' AND ({ids})"):
            by_id[change.alert_id].append(change)
    episodes = []
    for alert_id, changes in by_id.items():
        changes.sort(key=lambda c: c.ts_ns)
        raised = next((c for c in changes if c.state == "raised"), changes[0]).as_alert()
        latest = changes[-1].as_alert()
        episodes.append(
            Episode(
                alert_id=alert_id,
                rule=raised.rule,
                severity=raised.severity,
                state=latest.state,
                start_ns=raised.ts_ns,
                end_ns=latest.ts_ns if latest.state == "resolved" else None,
                message=raised.message,
                value=raised.value,
            )
        )
    episodes.sort(key=lambda e: (e.start_ns, e.alert_id))
    return episodes


async def _stored_changes(client: InfluxClient, where: str) -> list[StoredChange]:
    query = f'SELECT * FROM "{ALERTS.name}" WHERE {where} GROUP BY {ALERTS.group_by()}'
    return [
        StoredChange.from_point(series.tags, row, int(row["time"]))
        for series in await client.query(query)
        for row in series.rows()
    ]


def alert_json(alert: Alert) -> dict[str, object]:
    """`Alert.as_dict` with `acknowledged_by` always present, so every object has the same keys."""
    body = alert.as_dict()
    body.setdefault("acknowledged_by", None)
    return body
