"""`SeriesQuery`: one checked request for a time series, and the checks it runs on itself when
made, so that no instance holds an unsafe name, an empty range or too many buckets. Answering
it is `series.py`; building one from people's strings is `request.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from devices.base import MAX_TS_NS, MIN_TS_NS
from devices.catalogue import DEVICE_TYPES
from devices.rfc3339 import format_shortest
from query.errors import QueryError
from query.names import check_device_id, check_device_type, check_field_name, check_tenant
from query.times import bucket_count, format_every, round_bucket
from storage.schema import READINGS, SEQ

Agg = Literal["mean", "min", "max", "last", "count", "sum"]
AGGS: tuple[Agg, ...] = get_args(Agg)
FieldKind = Literal["number", "bool", "text"]

MAX_BUCKETS = 10_000  # per series

# What each aggregate takes; InfluxDB refuses the others ("unsupported mean iterator type").
TAKES: dict[Agg, frozenset[FieldKind]] = {
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
        if q.every_s is not None and kind not in TAKES[q.agg]:
            fitting = [a for a in AGGS if kind in TAKES[a]]
            raise QueryError(
                f"{q.agg} cannot take {q.device_type}'s field {name!r} ({_KIND_WORDS[kind]}): "
                f"use {' or '.join(fitting)}",
                param="agg",
            )


_KIND_WORDS: dict[FieldKind, str] = {"number": "a number", "bool": "true/false", "text": "text"}
