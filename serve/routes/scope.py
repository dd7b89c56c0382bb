"""A request's scope: its tenant and identifier parameters checked before anything reaches
InfluxQL, and alerts read within the token's tenants only (see serve/auth.py)."""

from __future__ import annotations

import dataclasses
import time

from access.tokens import Principal
from devices.topics import IDENTIFIER_RULE, is_identifier
from query.alerts import AlertFilter, alert_order, current_alerts
from serve.auth import require_tenant
from serve.errors import BadParameter
from storage.alert_record import Alert
from storage.influx import InfluxClient


def tenant_param(who: Principal, tenant: str | None) -> str | None:
    """A tenant parameter: None, or a valid name (else 400) that the token sees (else 403)."""
    return None if tenant is None else require_tenant(who, checked("tenant", tenant))


def identifier_param(kind: str, value: str | None) -> str | None:
    """An optional identifier parameter: None, or a valid identifier (else 400)."""
    return None if value is None else checked(kind, value)


def checked(kind: str, value: str) -> str:
    """`value` if it is an identifier, else BadParameter naming `kind` and the rule."""
    if not is_identifier(value):
        raise BadParameter(f"{kind} {value!r} is not valid: {IDENTIFIER_RULE}")
    return value


async def scoped_alerts(client: InfluxClient, who: Principal, query: AlertFilter) -> list[Alert]:
    """`current_alerts` within the token's tenants: one tenant's, or each of them merged."""
    now_ns = time.time_ns()
    if query.tenant is not None or who.tenants is None:
        return (await current_alerts(client, query, now_ns=now_ns))[0]
    merged = []
    for tenant in sorted(who.tenants):
        one = dataclasses.replace(query, tenant=tenant)
        merged += (await current_alerts(client, one, now_ns=now_ns))[0]
    return sorted(merged, key=alert_order)
