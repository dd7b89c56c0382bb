"""Which tenants and devices are stored, and where one device is: the lookups before a query.

Tenants and devices are read from InfluxDB's series index (`SHOW TAG VALUES`, `SHOW SERIES`),
which answers without reading points, so these stay fast however much data is stored. Only
measurements named after a catalogue type are consulted: `moclo_alerts` also carries
`device_id` tags, and `moclo_rejected` carries the `_invalid` tenant of garbage topics.

`list_devices` reads one point per device, its newest, with `ORDER BY time DESC LIMIT 1` per
series (InfluxDB reads each series backwards from its end and stops at the first point). What
costs is the shards a query opens (a shard holds 7 days here): with 1,000 cows and 30 days of
1-minute data (43 million points), looking over all 30 days took about 0.9 s, over the last day
0.2 s. So it looks over the last day first, then, only for the devices of the series index not
found there, up to `within_s` (default 30 days) back, 100 device ids a query; a device silent
for longer is not listed, though `find_device` still finds it.

`scope` (a set of tenants, or None for all) is where the asker may look: the HTTP API passes a
token's tenants, so a device of another tenant is not found, exactly as an unknown one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from devices.base import MIN_TS_NS
from devices.catalogue import DEVICE_TYPES
from devices.rfc3339 import format_shortest
from devices.topics import is_identifier
from query.errors import AmbiguousDevice, QueryError, UnknownDevice
from query.names import check_device_id, check_device_type, check_tenant
from storage.influx import InfluxClient, influxql_literal, quote_identifier
from storage.schema import DEVICE_ID, READINGS, TENANT

LIST_WITHIN_S = 30 * 86_400
RECENT_S = 86_400  # list_devices looks here first: a shard or two
NS = 1_000_000_000
_IDS_PER_QUERY = 100
_NAMED_TENANTS = 10  # at most this many tenants are named in an error message


@dataclass(frozen=True, slots=True)
class DeviceRef:
    tenant: str
    device_type: str
    device_id: str


@dataclass(frozen=True, slots=True)
class DeviceSummary:
    """A device and its newest stored reading."""

    tenant: str
    device_type: str
    device_id: str
    last_seen_ns: int
    last: dict[str, Any]  # field → value of the newest reading (its fields and `seq`)

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "device_type": self.device_type,
            "device_id": self.device_id,
            "last_seen": format_shortest(self.last_seen_ns),
            "last": self.last,
        }


async def list_tenants(client: InfluxClient) -> list[str]:
    """Every tenant with a stored reading of any catalogue type, sorted."""
    answer = await client.query(f'SHOW TAG VALUES FROM {_all_types()} WITH KEY = "{TENANT}"')
    return sorted({str(row[1]) for s in answer for row in s.values})


def tenant_condition(tenant: str | None, scope: frozenset[str] | None) -> str | None:
    """The InfluxQL condition for `tenant` (None: any) within `scope` (None: every tenant), or
    None when there is nothing to narrow. Checks every name."""
    parts = []
    if tenant is not None:
        parts.append(f'"{TENANT}" = {influxql_literal(check_tenant(tenant))}')
    if scope is not None:
        # An empty scope matches nothing: no stored tenant is the empty string.
        names = sorted(check_tenant(t) for t in scope) or [""]
        parts.append("(" + " OR ".join(f'"{TENANT}" = {influxql_literal(t)}' for t in names) + ")")
    return " AND ".join(parts) or None


async def count_devices(
    client: InfluxClient,
    device_type: str,
    *,
    tenant: str | None,
    scope: frozenset[str] | None = None,
) -> int:
    """How many devices of `device_type` are stored (in `tenant`, or in all; within `scope`);
    UnknownDevice if none is."""
    check_device_type(device_type)
    condition = tenant_condition(tenant, scope)
    where = "" if condition is None else f" WHERE {condition}"
    answer = await client.query(f"SHOW SERIES FROM {quote_identifier(device_type)}{where}")
    count = sum(len(s.values) for s in answer)
    if count == 0:
        where_words = _scope_words(tenant, scope) or "any tenant"
        raise UnknownDevice(
            f"no {device_type} devices are stored in {where_words} (database {client.database!r})",
            param="tenant" if tenant is not None else "device_type",
        )
    return count


async def find_device(
    client: InfluxClient,
    device_id: str,
    *,
    tenant: str | None,
    device_type: str | None = None,
    scope: frozenset[str] | None = None,
) -> DeviceRef:
    """Where `device_id` is stored: its tenant and type.

    UnknownDevice if it is not stored (in `tenant`, within `scope`; as `device_type`),
    AmbiguousDevice if, without a tenant, it is stored in several tenants, or in one under
    several types.
    """
    check_device_id(device_id)
    if device_type is not None:
        check_device_type(device_type)
    where = f'"{DEVICE_ID}" = {influxql_literal(device_id)}'
    condition = tenant_condition(tenant, scope)
    if condition is not None:
        where += f" AND {condition}"
    answer = await client.query(
        f'SHOW TAG VALUES FROM {_all_types()} WITH KEY = "{TENANT}" WHERE {where}'
    )
    stored = sorted(
        {DeviceRef(str(row[1]), s.name, device_id) for s in answer for row in s.values},
        key=lambda r: (r.tenant, r.device_type),
    )
    if not stored:
        # Within a scope, only its tenants are named: the others are none of the asker's business.
        where_words = _scope_words(tenant, scope) or await _tenants_searched(client)
        raise UnknownDevice(
            f"no device {device_id!r} is stored in {where_words} (database {client.database!r})",
            param="device_id",
        )
    if device_type is not None:
        of_type = [r for r in stored if r.device_type == device_type]
        if not of_type:
            types = ", ".join(sorted({r.device_type for r in stored}))
            raise UnknownDevice(
                f"device {device_id!r} is stored as {types}, not {device_type}",
                param="device_type",
            )
        stored = of_type
    tenants = sorted({r.tenant for r in stored})
    if len(tenants) > 1:
        raise AmbiguousDevice(
            f"device {device_id!r} is stored in tenants {', '.join(tenants)}: name the tenant",
            param="tenant",
        )
    if len(stored) > 1:
        types = ", ".join(r.device_type for r in stored)
        raise AmbiguousDevice(
            f"device {device_id!r} in tenant {tenants[0]!r} is stored as {types}: name the type",
            param="device_type",
        )
    return stored[0]


async def list_devices(
    client: InfluxClient,
    *,
    tenant: str | None,
    device_type: str | None = None,
    within_s: int = LIST_WITHIN_S,
    now_ns: int | None = None,
    scope: frozenset[str] | None = None,
) -> list[DeviceSummary]:
    """The devices (of `tenant`, of `device_type`, within `scope`) that sent a reading within
    `within_s` of now, each with its newest reading; ordered by tenant, type and id."""
    types = list(DEVICE_TYPES) if device_type is None else [check_device_type(device_type)]
    tenants = tenant_condition(tenant, scope)
    if within_s < 1:
        raise QueryError("within_s must be at least 1 second", param="since")
    now_ns = time.time_ns() if now_ns is None else now_ns
    stored = await _stored_devices(client, types, tenants)
    if not stored:
        return []
    recent_s = min(RECENT_S, within_s)
    found = await _newest(client, types, tenants, since_ns=now_ns - recent_s * NS)
    missing = sorted({ref.device_id for ref in stored - found.keys()})
    if missing and within_s > recent_s:
        # Only the devices silent lately are looked for further back, a chunk at a time, so
        # the older shards are opened for them alone.
        for at in range(0, len(missing), _IDS_PER_QUERY):
            older = await _newest(
                client,
                types,
                tenants,
                since_ns=now_ns - within_s * NS,
                device_ids=missing[at : at + _IDS_PER_QUERY],
            )
            for ref, summary in older.items():
                found.setdefault(ref, summary)
    return sorted(found.values(), key=lambda d: (d.tenant, d.device_type, d.device_id))


async def _stored_devices(
    client: InfluxClient, types: list[str], tenants: str | None
) -> set[DeviceRef]:
    """Every device of `types` (where `tenants`, a condition) in the series index, whenever it
    last spoke."""
    where = "" if tenants is None else f" WHERE {tenants}"
    answer = await client.query(f"SHOW SERIES FROM {_sources(types)}{where}")
    refs = set()
    for s in answer:
        for row in s.values:
            measurement, *tags = str(row[0]).split(",")
            values = dict(tag.partition("=")[::2] for tag in tags)
            ref = DeviceRef(values.get(TENANT, ""), measurement, values.get(DEVICE_ID, ""))
            # Ingest writes only valid names; anything else was not written by it.
            if (
                ref.device_type in types
                and is_identifier(ref.tenant)
                and is_identifier(ref.device_id)
            ):
                refs.add(ref)
    return refs


async def _newest(
    client: InfluxClient,
    types: list[str],
    tenants: str | None,
    *,
    since_ns: int,
    device_ids: list[str] | None = None,
) -> dict[DeviceRef, DeviceSummary]:
    """The newest reading at or after `since_ns` of each device (of `device_ids`)."""
    where = f"time >= {int(max(since_ns, MIN_TS_NS))}"
    if tenants is not None:
        where += f" AND {tenants}"
    if device_ids:
        ids = " OR ".join(f'"{DEVICE_ID}" = {influxql_literal(d)}' for d in device_ids)
        where += f" AND ({ids})"
    answer = await client.query(
        f"SELECT * FROM {_sources(types)} WHERE {where} GROUP BY {READINGS.group_by()} "
        "ORDER BY time DESC LIMIT 1"
    )
    found = {}
    for s in answer:
        if s.name not in DEVICE_TYPES or not s.values:
            continue
        row = dict(zip(s.columns, s.values[0], strict=True))
        # Several measurements in one statement share their columns; keep this type's own.
        fields = (*DEVICE_TYPES[s.name].reading.measurement_fields, *READINGS.fields)
        ref = DeviceRef(s.tags.get(TENANT, ""), s.name, s.tags.get(DEVICE_ID, ""))
        found[ref] = DeviceSummary(
            tenant=ref.tenant,
            device_type=ref.device_type,
            device_id=ref.device_id,
            last_seen_ns=int(row["time"]),
            last={f: row[f] for f in fields if f in row},
        )
    return found


def _scope_words(tenant: str | None, scope: frozenset[str] | None) -> str | None:
    if tenant is not None:
        return f"tenant {tenant!r}"
    if scope is not None:
        return f"tenant{'s' if len(scope) != 1 else ''} {', '.join(sorted(scope))}"
    return None


async def _tenants_searched(client: InfluxClient) -> str:
    tenants = await list_tenants(client)
    if not tenants:
        return "any tenant (no readings are stored at all)"
    named = ", ".join(tenants[:_NAMED_TENANTS])
    more = f" and {len(tenants) - _NAMED_TENANTS} more" if len(tenants) > _NAMED_TENANTS else ""
    return f"any tenant (searched {named}{more})"


def _all_types() -> str:
    return _sources(list(DEVICE_TYPES))


def _sources(types: list[str]) -> str:
    return ", ".join(quote_identifier(name) for name in types)
