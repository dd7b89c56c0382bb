"""Stored alerts, read back from `moclo_alerts`: the latest change of every episode.

Used on start to restore the engine, and by `moclo alerts` to list what is open and to look an
alert up by its id.
"""

from __future__ import annotations

from storage.alert_record import StoredChange
from storage.influx import InfluxClient, Series, influxql_literal
from storage.lineprotocol import ALERTS_MEASUREMENT

_COLUMNS = ("alert_id", "first_seen", "last_seen", "value", "acknowledged_by", "message", "kind")


async def latest_changes(
    client: InfluxClient, *, tenant: str | None = None, since_ns: int | None = None
) -> list[StoredChange]:
    """The newest change per (tenant, device, rule): the state each rule's latest episode is in.

    With `since_ns`, only rules whose latest change is that recent.
    """
    where = []
    if tenant is not None:
        where.append(f'"tenant" = {influxql_literal(tenant)}')
    if since_ns is not None:
        where.append(f"time >= {int(since_ns)}")
    columns = ", ".join(f'"{c}"' for c in _COLUMNS)
    query = (
        f'SELECT last("state") AS "state", {columns} FROM "{ALERTS_MEASUREMENT}"'
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + ' GROUP BY "tenant", "device_id", "device_type", "rule", "severity"'
    )
    changes = _changes(await client.query(query))
    # A rule whose severity changed has a series per severity: keep the newest per rule.
    newest: dict[tuple[str, str, str, str], StoredChange] = {}
    for c in changes:
        key = (c.tenant, c.device_type, c.device_id, c.rule)
        if key not in newest or c.ts_ns > newest[key].ts_ns:
            newest[key] = c
    return list(newest.values())


async def find_alert(client: InfluxClient, alert_id: str) -> StoredChange | None:
    """The newest stored change of the episode `alert_id`, or None if none was stored."""
    columns = ", ".join(f'"{c}"' for c in _COLUMNS)
    query = (
        f'SELECT "state", {columns} FROM "{ALERTS_MEASUREMENT}" '
        f'WHERE "alert_id" = {influxql_literal(alert_id)}'
        ' GROUP BY "tenant", "device_id", "device_type", "rule", "severity"'
    )
    changes = _changes(await client.query(query))
    return max(changes, key=lambda c: c.ts_ns) if changes else None


async def raised_since(
    client: InfluxClient, since_ns: int, *, tenant: str | None = None
) -> dict[str, int]:
    """The episodes raised at or after `since_ns`: alert id → when it was raised."""
    where = [f"time >= {int(since_ns)}", "\"state\" = 'raised'"]
    if tenant is not None:
        where.append(f'"tenant" = {influxql_literal(tenant)}')
    query = f'SELECT "alert_id" FROM "{ALERTS_MEASUREMENT}" WHERE {" AND ".join(where)}'
    return {
        str(row["alert_id"]): int(row["time"])
        for series in await client.query(query)
        for row in series.rows()
    }


def _changes(result: list[Series]) -> list[StoredChange]:
    return [
        StoredChange.from_point(series.tags, row, int(row["time"]))
        for series in result
        for row in series.rows()
    ]
