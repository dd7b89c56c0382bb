"""`/api/tenants` and `/api/devices`: what is stored, per device its newest reading and its
open alerts, within the token's tenants."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from devices.rfc3339 import format_us
from devices.rule_base import Severity
from query.alerts import SEVERITY_RANK, AlertFilter, current_alerts
from query.errors import UnknownDevice
from query.fleet import DeviceSummary as StoredDevice
from query.fleet import find_device, list_devices, list_tenants
from serve.auth import AUTH_ERRORS, Caller
from serve.errors import ErrorBody
from serve.routes.scope import identifier_param, scoped_alerts, tenant_param
from serve.state import Influx
from storage.alert_record import Alert

router = APIRouter()


class TenantList(BaseModel):
    tenants: list[str]


class DeviceView(BaseModel):
    tenant: str
    device_type: str
    device_id: str
    last_seen: str = Field(description="RFC 3339 time of the newest stored reading")
    last: dict[str, Any] = Field(description="the newest stored reading's fields")
    open_alerts: int
    worst_severity: Severity | None = Field(description="of the open alerts, if any")


class DeviceList(BaseModel):
    devices: list[DeviceView]


@router.get("/api/tenants", response_model=TenantList, responses=AUTH_ERRORS, tags=["devices"])
async def tenants(who: Caller, client: Influx) -> TenantList:
    """Every tenant with stored readings (that the token sees)."""
    return TenantList(tenants=[t for t in await list_tenants(client) if who.sees(t)])


@router.get("/api/devices", response_model=DeviceList, responses=AUTH_ERRORS, tags=["devices"])
async def devices(
    who: Caller,
    client: Influx,
    tenant: Annotated[
        str | None, Query(description="one tenant (default: all the token's)")
    ] = None,
    type: Annotated[str | None, Query(description="one device type")] = None,
) -> DeviceList:
    """Every device with its newest reading and its open alerts."""
    tenant = tenant_param(who, tenant)
    found = await list_devices(client, tenant=tenant, device_type=type, scope=who.tenants)
    alerts = await scoped_alerts(client, who, AlertFilter(tenant=tenant))
    return DeviceList(devices=[_summary(d, alerts) for d in found])


@router.get(
    "/api/devices/{tenant}/{device_id}",
    response_model=DeviceView,
    responses={**AUTH_ERRORS, 404: {"model": ErrorBody}},
    tags=["devices"],
)
async def device(who: Caller, client: Influx, tenant: str, device_id: str) -> DeviceView:
    """One device with its newest reading and its open alerts."""
    tenant_param(who, tenant)
    identifier_param("device_id", device_id)
    ref = await find_device(client, device_id, tenant=tenant)
    found = [
        d
        for d in await list_devices(client, tenant=tenant, device_type=ref.device_type)
        if d.device_id == device_id
    ]
    if not found:
        raise UnknownDevice(f"no device {device_id!r} in tenant {tenant!r}")
    alerts, _ = await current_alerts(
        client, AlertFilter(tenant=tenant, device_id=device_id), now_ns=time.time_ns()
    )
    return _summary(found[0], alerts)


def _summary(device: StoredDevice, alerts: list[Alert]) -> DeviceView:
    mine = [a for a in alerts if a.tenant == device.tenant and a.device_id == device.device_id]
    worst = max(mine, key=lambda a: SEVERITY_RANK[a.severity]).severity if mine else None
    return DeviceView(
        tenant=device.tenant,
        device_type=device.device_type,
        device_id=device.device_id,
        last_seen=format_us(device.last_seen_ns),
        last=dict(device.last),
        open_alerts=len(mine),
        worst_severity=worst,
    )
