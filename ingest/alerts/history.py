"""Stored alerts, read back from `moclo_alerts`: the latest change of every episode.

Used on start to restore the engine, and by `moclo alerts` to list what is open.
"""

from __future__ import annotations

from ingest.alerts.record import StoredChange
from ingest.influx import InfluxClient, quote_string
from ingest.lineprotocol import ALERTS_MEASUREMENT

_COLUMNS = ("alert_id", "first_seen", "last_seen", "value", "acknowledged_by", "message", "kind")


async def latest_changes(
    client: InfluxClient, *, tenant: str | None = None, since_ns: int | None = None
) -> list[StoredChange]:
    """The newest change per (tenant, device, rule): the state each rule's latest episode is in.

    With `since_ns`, only rules whose latest change is that recent.
    """
    where = []
    if tenant is not None:
        where.append(f'"tenant" = {quote_string(tenant)}')
    if since_ns is not None:
        where.append(f"time >= {int(since_ns)}")
    columns = ", ".join(f'"{c}"' for c in _COLUMNS)
    query = (
        f'SELECT last("state") AS "state", {columns} FROM "{ALERTS_MEASUREMENT}"'
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + ' GROUP BY "tenant", "device_id", "device_type", "rule", "severity"'
    )
    changes = []
    for series in await client.query(query):
        tags = series.tags
        for row in series.rows():
            ts = int(row["time"])
            changes.append(
                StoredChange(
                    tenant=tags["tenant"],
                    device_type=tags["device_type"],
                    device_id=tags["device_id"],
                    rule=tags["rule"],
                    severity=tags["severity"],
                    state=str(row["state"]),
                    alert_id=str(row["alert_id"]),
                    ts_ns=ts,
                    first_seen_ns=int(row["first_seen"] or ts),
                    last_seen_ns=int(row["last_seen"] or ts),
                    value=float(row["value"] or 0.0),
                    acknowledged_by=str(row["acknowledged_by"] or ""),
                )
            )
    # A rule whose severity changed has a series per severity: keep the newest per rule.
    newest: dict[tuple[str, str, str, str], StoredChange] = {}
    for c in changes:
        key = (c.tenant, c.device_type, c.device_id, c.rule)
        if key not in newest or c.ts_ns > newest[key].ts_ns:
            newest[key] = c
    return list(newest.values())
