"""Stored alerts, read back from `moclo_alerts`: the latest change of every episode.

Used on start to restore the engine, and by `moclo alerts` to list what is open and to look an
alert up by its id.
"""

from __future__ import annotations

from storage.alert_record import StoredChange
from storage.influx import InfluxClient, Series, influxql_literal
from storage.schema import (
    ACKNOWLEDGED_BY,
    ALERT_ID,
    ALERTS,
    FIRST_SEEN,
    KIND,
    LAST_SEEN,
    MESSAGE,
    STATE,
    TENANT,
    VALUE,
)

_COLUMNS = (ALERT_ID, FIRST_SEEN, LAST_SEEN, VALUE, ACKNOWLEDGED_BY, MESSAGE, KIND)


async def latest_changes(
    client: InfluxClient, *, tenant: str | None = None, since_ns: int | None = None
) -> list[StoredChange]:
    """The newest change per (tenant, device, rule): the state each rule's latest episode is in.

    With `since_ns`, only rules whose latest change is that recent.
    """
    where = []
    if tenant is not None:
        where.append(f'"{TENANT}" = {influxql_literal(tenant)}')
    if since_ns is not None:
        where.append(f"time >= {int(since_ns)}")
    columns = ", ".join(f'"{c}"' for c in _COLUMNS)
    query = (
        f'SELECT last("{STATE}") AS "{STATE}", {columns} FROM "{ALERTS.name}"'
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + f" GROUP BY {ALERTS.group_by()}"
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
        f'SELECT "{STATE}", {columns} FROM "{ALERTS.name}" '
        f'WHERE "{ALERT_ID}" = {influxql_literal(alert_id)}'
        f" GROUP BY {ALERTS.group_by()}"
    )
    changes = _changes(await client.query(query))
    return max(changes, key=lambda c: c.ts_ns) if changes else None


async def raised_since(
    client: InfluxClient, since_ns: int, *, tenant: str | None = None
) -> dict[str, int]:
    """The episodes raised at or after `since_ns`: alert id → when it was raised."""
    where = [f"time >= {int(since_ns)}", f"\"{STATE}\" = 'raised'"]
    if tenant is not None:
        where.append(f'"{TENANT}" = {influxql_literal(tenant)}')
    query = f'SELECT "{ALERT_ID}" FROM "{ALERTS.name}" WHERE {" AND ".join(where)}'
    return {
        str(row[ALERT_ID]): int(row["time"])
        for series in await client.query(query)
        for row in series.rows()
    }


def _changes(result: list[Series]) -> list[StoredChange]:
    return [
        StoredChange.from_point(series.tags, row, int(row["time"]))
        for series in result
        for row in series.rows()
    ]
