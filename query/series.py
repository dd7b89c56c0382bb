"""Time series of one device or of a fleet, read with InfluxQL on `/query`.

`run_series(client, query)` answers a checked `SeriesQuery` (build one from people's strings
with `query.request.parse_series_request`). Windows and aggregates are computed by InfluxDB
(`GROUP BY time(...)`, plus `"tenant", "device_id"` per device); Python only reshapes the
answer. A `SeriesQuery` cannot hold an id, type or field that breaks the catalogue's rules (it
checks itself when made), and every identifier and value is quoted in InfluxQL besides.

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
from typing import Any, Literal, get_args

from devices.base import MAX_TS_NS, MIN_TS_NS
from devices.catalogue import DEVICE_TYPES
from devices.rfc3339 import format_shortest
from query.errors import QueryError
from query.fleet import count_devices, find_device, tenant_condition
from query.names import check_device_id, check_device_type, check_field_name, check_tenant
from query.times import bucket_count, format_every, round_bucket
from storage.influx import InfluxClient, Series, influxql_literal, quote_identifier
from storage.schema import DEVICE_ID, READINGS, SEQ, TENANT

__all__ = [
    "AGGS",
    "MAX_BUCKETS",
    "Agg",
    "QueryError",
    "SeriesQuery",
    "SeriesResult",
    "TimeSeries",
    "Value",
    "run_series",
]

Agg = Literal["mean", "min", "max", "last", "count", "sum"]
AGGS: tuple[Agg, ...] = get_args(Agg)
Value = float | int | bool | str | None
FieldKind = Literal["number", "bool", "text"]

MAX_BUCKETS = 10_000  # per series
MAX_RAW_POINTS = 10_000  # per series
MAX_POINTS = 1_000_000  # per answer, over all its series

# What each aggregate takes; InfluxDB refuses the others ("unsupported mean iterator type").
_TAKES: dict[Agg, frozenset[FieldKind]] = {
    "mean": frozenset({"number"}),
    "sum": frozenset({"number"}),
    "min": frozenset({"number", "bool"}),
    "max": frozenset({"number", "bool"}),
    "last": frozenset({"number", "bool", "text"}),
    "count": frozenset({"number", "bool", "text"}),
}


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    """One checked request: a time range [start, end) of one device or one fleet.

    Checks itself when made and raises QueryError, so no instance holds an unsafe name.
    """

    start_ns: int
    end_ns: int
    device_id: str | None = None  # one device; or
    device_type: str | None = None  # a fleet of one type (needed when device_id is None)
    tenant: str | None = None  # None: any tenant
    fields: tuple[str, ...] = ()  # (): every field of the type that `agg` can take
    every_s: int | None = None  # None: raw points
    agg: Agg = "mean"
    group_by_device: bool = False  # a fleet: one series per device, not one over them all
    # The tenants the asker may see (None: all); a device or a fleet is looked for only there.
    # Not echoed: a fleet's `tenant` null then means "every tenant in scope".
    scope: frozenset[str] | None = None

    def __post_init__(self) -> None:
        _check_scope(self)
        _check_fields(self)
        _check_range(self)
        _check_buckets(self)

    @property
    def per_device(self) -> bool:
        """Whether each series is one device's (a device query, or a fleet grouped by device)."""
        return self.device_id is not None or self.group_by_device

    def echo(self) -> dict[str, Any]:
        """The `query` object of the JSON document."""
        return {
            "device_id": self.device_id,
            "device_type": self.device_type,
            "tenant": self.tenant,
            "fields": list(self.fields),
            "from": format_shortest(self.start_ns),
            "to": format_shortest(self.end_ns),
            "every": None if self.every_s is None else format_every(self.every_s),
            "every_s": self.every_s,
            "agg": None if self.every_s is None else self.agg,
            "group_by": "device_id" if self.group_by_device else None,
        }


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


def field_kind(device_type: str, field: str) -> FieldKind:
    """Whether a stored field holds numbers, true/false or text (`seq` is a number)."""
    if field == SEQ:
        return "number"
    annotation = DEVICE_TYPES[device_type].reading.model_fields[field].annotation
    if annotation is bool:
        return "bool"
    return "number" if annotation in (int, float) else "text"


def stored_fields(device_type: str) -> tuple[str, ...]:
    """Every field a type's points carry: its reading's fields, then `seq`."""
    return (*DEVICE_TYPES[device_type].reading.measurement_fields, *READINGS.fields)


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
    takes = _TAKES[query.agg]
    chosen = tuple(f for f in fields if field_kind(query.device_type, f) in takes)
    if not chosen:
        raise QueryError(
            f"{query.device_type} has no field that {query.agg} can take: use count or last",
            param="agg",
        )
    return chosen


# -- checks, run when a SeriesQuery is made ------------------------------------------------


def _check_range(q: SeriesQuery) -> None:
    for param, name, value in (("start", "from", q.start_ns), ("end", "to", q.end_ns)):
        if type(value) is not int:
            raise QueryError(f"{name} must be integer nanoseconds", param=param)
        if not MIN_TS_NS <= value <= MAX_TS_NS:
            raise QueryError(
                f"{name} is outside what InfluxDB stores (years 1677 to 2262)", param=param
            )
    if q.start_ns >= q.end_ns:
        raise QueryError(
            f"from ({format_shortest(q.start_ns)}) must be before to ({format_shortest(q.end_ns)})",
            param="start",
        )


def _check_scope(q: SeriesQuery) -> None:
    if q.device_id is not None:
        check_device_id(q.device_id)
    if q.tenant is not None:
        check_tenant(q.tenant)
    for tenant in q.scope or ():
        check_tenant(tenant)
    if q.device_type is not None:
        check_device_type(q.device_type)
    if q.device_id is None and q.device_type is None:
        raise QueryError(
            "name a device (its id) or a fleet (a device type, e.g. cow_tracker)",
            param="device_id",
        )
    if q.group_by_device and q.device_id is not None:
        raise QueryError(
            "group by device_id is for a fleet: give a device type instead of a device id",
            param="group_by",
        )
    if q.agg not in AGGS:
        raise QueryError(f"agg {q.agg!r} is not one of {', '.join(AGGS)}", param="agg")


def _check_buckets(q: SeriesQuery) -> None:
    if q.every_s is None:
        if q.device_id is None and not q.group_by_device:
            raise QueryError(
                "a fleet's raw points come per device: group by device_id, or give every "
                "(e.g. 5m or auto) to aggregate over the fleet",
                param="every",
            )
        return
    if type(q.every_s) is not int or q.every_s < 1:
        raise QueryError("every must be whole seconds, at least 1s", param="every")
    buckets = bucket_count(q.start_ns, q.end_ns, q.every_s)
    if buckets > MAX_BUCKETS:
        span_s = (q.end_ns - q.start_ns) / 1e9
        least = round_bucket(span_s / (MAX_BUCKETS - 1))
        raise QueryError(
            f"every {format_every(q.every_s)} makes {buckets:,} buckets over "
            f"{format_every(max(1, round(span_s)))}, more than {MAX_BUCKETS:,}: use every "
            f"{format_every(least)} or more, every auto, or a shorter range",
            param="every",
        )


def _check_fields(q: SeriesQuery) -> None:
    if not isinstance(q.fields, tuple):
        raise QueryError("fields must be a tuple of field names", param="fields")
    if len(set(q.fields)) != len(q.fields):
        raise QueryError("a field is named twice", param="fields")
    for name in q.fields:
        check_field_name(name)
    if q.device_type is None:
        return  # a device's type is known once it is found; checked again then
    known = stored_fields(q.device_type)
    for name in q.fields:
        if name not in known:
            raise QueryError(
                f"{q.device_type} has no field {name!r}; its fields: {', '.join(known)}",
                param="fields",
            )
        kind = field_kind(q.device_type, name)
        if q.every_s is not None and kind not in _TAKES[q.agg]:
            fitting = [a for a in AGGS if kind in _TAKES[a]]
            raise QueryError(
                f"{q.agg} cannot take {q.device_type}'s field {name!r} ({_KIND_WORDS[kind]}): "
                f"use {' or '.join(fitting)}",
                param="agg",
            )


_KIND_WORDS: dict[FieldKind, str] = {"number": "a number", "bool": "true/false", "text": "text"}
