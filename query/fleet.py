"""Which tenants and devices are stored, and where one device is: the lookups before a query.

Tenants and devices are read from InfluxDB's series index (`SHOW TAG VALUES`, `SHOW SERIES`),
which answers without reading points, so these stay fast however much data is stored. Only
measurements named after a catalogue type are consulted: `moclo_alerts` also carries
`device_id` tags, and `moclo_rejected` carries the `_invalid` tenant of garbage topics.

`list_devices` reads one point per device: its newest, found with `ORDER BY time DESC LIMIT 1`
per series (InfluxDB reads each series backwards from its end and stops at the first point),
and only within `within_s` (default 30 days) before now, so the shards of older data are never
opened. A device silent for longer is not listed, though `find_device` still finds it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from devices.catalogue import DEVICE_TYPES
from ingest.influx import InfluxClient, quote_identifier, quote_string
from query.errors import AmbiguousDevice, UnknownDevice
from query.names import check_device_id, check_device_type, check_tenant
from query.times import format_time

LIST_WITHIN_S = 30 * 86_400
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
            "last_seen": format_time(self.last_seen_ns),
            "last": self.last,
        }


async def list_tenants(client: InfluxClient) -> list[str]:
    """Every tenant with a stored reading of any catalogue type, sorted."""
    answer = await client.query(f'SHOW TAG VALUES FROM {_all_types()} WITH KEY = "tenant"')
    return sorted({str(row[1]) for s in answer for row in s.values})


async def count_devices(client: InfluxClient, device_type: str, *, tenant: str | None) -> int:
    """How many devices of `device_type` are stored (in `tenant`, or in all); UnknownDevice if
    none is."""
    check_device_type(device_type)
    where = "" if tenant is None else f' WHERE "tenant" = {quote_string(check_tenant(tenant))}'
    answer = await client.query(f"SHOW SERIES FROM {quote_identifier(device_type)}{where}")
    count = sum(len(s.values) for s in answer)
    if count == 0:
        scope = "any tenant" if tenant is None else f"tenant {tenant!r}"
        raise UnknownDevice(
            f"no {device_type} devices are stored in {scope} (database {client.database!r})",
            param="tenant" if tenant is not None else "device_type",
        )
    return count


async def find_device(
    client: InfluxClient, device_id: str, *, tenant: str | None, device_type: str | None = None
) -> DeviceRef:
    """Where `device_id` is stored: its tenant and type.

    UnknownDevice if it is not stored (in `tenant`; as `device_type`), AmbiguousDevice if,
    without a tenant, it is stored in several tenants, or in one under several types.
    """
    check_device_id(device_id)
    if device_type is not None:
        check_device_type(device_type)
    where = f'"device_id" = {quote_string(device_id)}'
    if tenant is not None:
        where += f' AND "tenant" = {quote_string(check_tenant(tenant))}'
    answer = await client.query(
        f'SHOW TAG VALUES FROM {_all_types()} WITH KEY = "tenant" WHERE {where}'
    )
    stored = sorted(
        {DeviceRef(str(row[1]), s.name, device_id) for s in answer for row in s.values},
        key=lambda r: (r.tenant, r.device_type),
    )
    if not stored:
        scope = f"tenant {tenant!r}" if tenant is not None else await _tenants_searched(client)
        raise UnknownDevice(
            f"no device {device_id!r} is stored in {scope} (database {client.database!r})",
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
) -> list[DeviceSummary]:
    """The devices (of `tenant`, of `device_type`) that sent a reading within `within_s` of
    now, each with its newest reading; ordered by tenant, type and id."""
    if device_type is not None:
        check_device_type(device_type)
    now_ns = time.time_ns() if now_ns is None else now_ns
    source = _all_types() if device_type is None else quote_identifier(device_type)
    where = f"time >= {int(now_ns - within_s * 1_000_000_000)}"
    if tenant is not None:
        where += f' AND "tenant" = {quote_string(check_tenant(tenant))}'
    answer = await client.query(
        f'SELECT * FROM {source} WHERE {where} GROUP BY "tenant", "device_id" '
        "ORDER BY time DESC LIMIT 1"
    )
    devices = []
    for s in answer:
        if s.name not in DEVICE_TYPES or not s.values:
            continue
        row = dict(zip(s.columns, s.values[0], strict=True))
        # Several measurements in one statement share their columns; keep this type's own.
        fields = (*DEVICE_TYPES[s.name].reading.measurement_fields, "seq")
        devices.append(
            DeviceSummary(
                tenant=s.tags.get("tenant", ""),
                device_type=s.name,
                device_id=s.tags.get("device_id", ""),
                last_seen_ns=int(row["time"]),
                last={f: row[f] for f in fields if f in row},
            )
        )
    devices.sort(key=lambda d: (d.tenant, d.device_type, d.device_id))
    return devices


async def _tenants_searched(client: InfluxClient) -> str:
    tenants = await list_tenants(client)
    if not tenants:
        return "any tenant (no readings are stored at all)"
    named = ", ".join(tenants[:_NAMED_TENANTS])
    more = f" and {len(tenants) - _NAMED_TENANTS} more" if len(tenants) > _NAMED_TENANTS else ""
    return f"any tenant (searched {named}{more})"


def _all_types() -> str:
    return ", ".join(quote_identifier(name) for name in DEVICE_TYPES)
