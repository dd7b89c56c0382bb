"""Time series of one device or of a fleet, read with InfluxQL on `/query`.

`run_series(client, query)` answers a checked `SeriesQuery` (`series_query.py`; build one
from people's strings with `query.request.parse_series_request`). Windows and aggregates are
computed by InfluxDB (`GROUP BY time(...)`, plus `"tenant", "device_id"` per device); Python
only reshapes the answer. A `SeriesQuery` cannot hold an id, type or field that breaks the
catalogue's rules (it checks itself when made), and every identifier and value is quoted in
InfluxQL besides.

What is answered:
- raw points (`every_s` None): the stored points in [start, end), at most `point_limit` per
  series: the newest are kept and `truncated` is set. The limit is 10,000, or 1,000,000 divided
  by the number of devices of a fleet, whichever is smaller.
- buckets (`every_s`): `agg` of each field per bucket. Buckets are aligned to the Unix epoch
  (5m buckets start at :00, :05, ...; 1d buckets at midnight UTC), and a bucket's time is its
  start, so the first may start before `from` (it holds only points from `from` on). Empty
  buckets are absent; within a bucket that has points, a field with none of its own is null.
  Over a fleet (no group by), a bucket aggregates every point of every device in it: `mean` is
  the mean of all their points, `count` counts all of them, `last` is the newest of any device.
- mean and sum need number fields; min and max numbers or true/false; count and last take any.
  Without explicit fields, every field the aggregate can take is shown (raw: every field).

The JSON document (`SeriesResult.to_json()`, also served as-is by the HTTP API), version 1:

    {
      "version": 1,
      "query": {                          the checked request, with what was resolved
        "device_id": "cow-0007" | null,   null for a fleet
        "device_type": "cow_tracker",     also for a device: the type it is stored under
        "tenant": "farm" | null,          for a device: its tenant; for a fleet: null = all
        "fields": ["body_temp_c", ...],   the columns of every series' points, in order
        "from": "2026-11-22T06:00:00Z",   inclusive
        "to": "2026-11-22T12:00:00Z",     exclusive
        "every": "5m" | null,             null: raw points
        "every_s": 300 | null,
        "agg": "mean" | null,             null with raw points
        "group_by": "device_id" | null
      },
      "series": [
        {
          "tenant": "farm" | null,        null only for a fleet of all tenants, aggregated
          "device_type": "cow_tracker",
          "device_id": "cow-0007" | null, null when aggregated over a fleet
          "fields": ["body_temp_c", ...],
          "points": [["2026-11-22T06:00:00Z", 38.61, 412.5], ...]
        }
      ],
      "truncated": false,                 true: some series hit point_limit
      "point_limit": 10000 | null         raw points: the most per series; null for buckets
    }

A point is its time, then one value per field (a number, true/false, a string, or null), oldest
first. Times are RFC 3339 in UTC ending in `Z`, with 3, 6 or 9 fraction digits only when the
time is not a whole second. A device query has exactly one series (no points if it was silent),
a fleet aggregate exactly one, a fleet grouped by device one per device with points in range,
ordered by tenant and device id.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from devices.catalogue import DEVICE_TYPES
from devices.rfc3339 import format_shortest
from query.errors import QueryError
from query.fleet import count_devices, find_device, tenant_condition
from query.series_query import TAKES, SeriesQuery, field_kind
from query.times import bucket_count
from storage.influx import InfluxClient, Series, influxql_literal, quote_identifier
from storage.schema import DEVICE_ID, READINGS, TENANT

__all__ = [
    "QueryError",
    "SeriesResult",
    "TimeSeries",
    "Value",
    "run_series",
]

Value = float | int | bool | str | None

MAX_RAW_POINTS = 10_000  # per series
MAX_POINTS = 1_000_000  # per answer, over all its series


@dataclass(frozen=True, slots=True)
class TimeSeries:
    """The points of one device, or of a fleet aggregated, oldest first."""

    tenant: str | None
    device_type: str
    device_id: str | None
    fields: tuple[str, ...]
    times_ns: tuple[int, ...]
    values: tuple[tuple[Value, ...], ...]  # per point, one value per field

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "device_type": self.device_type,
            "device_id": self.device_id,
            "fields": list(self.fields),
            "points": [
                [format_shortest(t), *row]
                for t, row in zip(self.times_ns, self.values, strict=True)
            ],
        }


@dataclass(frozen=True, slots=True)
class SeriesResult:
    query: SeriesQuery  # as asked, with the device's tenant and type and the fields resolved
    series: tuple[TimeSeries, ...]
    truncated: bool = False
    point_limit: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The stable JSON document described at the top of this module."""
        return {
            "version": 1,
            "query": self.query.echo(),
            "series": [s.to_json() for s in self.series],
            "truncated": self.truncated,
            "point_limit": self.point_limit,
        }


async def run_series(client: InfluxClient, query: SeriesQuery) -> SeriesResult:
    """Answers `query` with one InfluxQL statement (after one cheap lookup of the device or the
    fleet's size). Raises UnknownDevice / AmbiguousDevice (QueryErrors) for a device or fleet
    that is not stored as named, QueryError when the answer would be too large, and InfluxError
    when InfluxDB cannot answer."""
    if query.device_id is not None:
        ref = await find_device(
            client,
            query.device_id,
            tenant=query.tenant,
            device_type=query.device_type,
            scope=query.scope,
        )
        query = replace(query, tenant=ref.tenant, device_type=ref.device_type)
        devices = 1
    else:
        assert query.device_type is not None  # checked by SeriesQuery
        devices = await count_devices(
            client, query.device_type, tenant=query.tenant, scope=query.scope
        )
    assert query.device_type is not None
    if not query.fields:
        query = replace(query, fields=_default_fields(query))
    series_count = devices if query.per_device else 1
    limit = None
    if query.every_s is None:
        limit = min(MAX_RAW_POINTS, max(1, MAX_POINTS // series_count))
    else:
        points = series_count * bucket_count(query.start_ns, query.end_ns, query.every_s)
        if points > MAX_POINTS:
            raise QueryError(
                f"{series_count} devices × {points // series_count} buckets is more than "
                f"{MAX_POINTS:,} points: use a larger every, a shorter range, or one tenant",
                param="every",
            )
    answer = await client.query(influxql(query, limit=limit))
    return _result(query, answer, limit)


def influxql(query: SeriesQuery, *, limit: int | None = None) -> str:
    """The one InfluxQL statement that answers a resolved `query` (fields and type known)."""
    assert query.device_type is not None and query.fields
    where = [f"time >= {int(query.start_ns)}", f"time < {int(query.end_ns)}"]
    tenants = tenant_condition(query.tenant, query.scope)
    if tenants is not None:
        where.append(tenants)
    if query.device_id is not None:
        where.append(f'"{DEVICE_ID}" = {influxql_literal(query.device_id)}')
    tags = f" {READINGS.group_by()}" if query.per_device else ""
    if query.every_s is None:
        columns = ", ".join(quote_identifier(f) for f in query.fields)
        # Newest first, so that a capped answer keeps the newest; one over the cap says so.
        tail = f" GROUP BY{tags} ORDER BY time DESC LIMIT {int(limit or MAX_RAW_POINTS) + 1}"
    else:
        columns = ", ".join(
            f"{query.agg}({quote_identifier(f)}) AS {quote_identifier(f)}" for f in query.fields
        )
        tail = f" GROUP BY time({int(query.every_s)}s){',' if tags else ''}{tags} fill(none)"
    return (
        f"SELECT {columns} FROM {quote_identifier(query.device_type)} "
        f"WHERE {' AND '.join(where)}{tail}"
    )


def _result(query: SeriesQuery, answer: list[Series], limit: int | None) -> SeriesResult:
    assert query.device_type is not None
    truncated = False
    found: dict[tuple[str | None, str | None], TimeSeries] = {}
    for s in answer:
        position = {name: i for i, name in enumerate(s.columns)}
        rows = s.values
        if limit is not None:
            truncated = truncated or len(rows) > limit
            rows = rows[:limit][::-1]
        if query.per_device:
            key = (s.tags.get(TENANT), s.tags.get(DEVICE_ID))
        else:
            key = (query.tenant, None)
        found[key] = TimeSeries(
            tenant=key[0],
            device_type=query.device_type,
            device_id=key[1],
            fields=query.fields,
            times_ns=tuple(int(row[0]) for row in rows),
            values=tuple(
                tuple(row[position[f]] if f in position else None for f in query.fields)
                for row in rows
            ),
        )
    if not query.group_by_device and not found:  # one device or one aggregate: always a series
        key = (query.tenant, query.device_id)
        found[key] = TimeSeries(key[0], query.device_type, key[1], query.fields, (), ())
    ordered = tuple(found[k] for k in sorted(found, key=lambda k: (k[0] or "", k[1] or "")))
    return SeriesResult(query, ordered, truncated, limit)


def _default_fields(query: SeriesQuery) -> tuple[str, ...]:
    assert query.device_type is not None
    fields = DEVICE_TYPES[query.device_type].reading.measurement_fields
    if query.every_s is None:
        return fields
    takes = TAKES[query.agg]
    chosen = tuple(f for f in fields if field_kind(query.device_type, f) in takes)
    if not chosen:
        raise QueryError(
            f"{query.device_type} has no field that {query.agg} can take: use count or last",
            param="agg",
        )
    return chosen
