"""`/api/alerts` and `/api/episodes`: alerts as `moclo alerts --json` lists them, and one
device's alert episodes over a time range, within the token's tenants. (Acknowledging one is
serve/routes/acknowledgements.py.)"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from devices.rule_base import Severity
from query.alerts import AlertFilter, alert_json, device_episodes
from query.request import parse_series_request
from query.times import parse_since
from serve.auth import AUTH_ERRORS, Caller
from serve.routes.scope import identifier_param, scoped_alerts, tenant_param
from serve.state import Influx

router = APIRouter()


class AlertList(BaseModel):
    alerts: list[dict[str, Any]] = Field(description="objects as `moclo alerts --json` prints")


class EpisodeList(BaseModel):
    episodes: list[dict[str, Any]]


@router.get("/api/alerts", response_model=AlertList, responses=AUTH_ERRORS, tags=["alerts"])
async def alerts(
    who: Caller,
    client: Influx,
    tenant: Annotated[str | None, Query(description="default: all the token's")] = None,
    device: Annotated[str | None, Query()] = None,
    severity: Annotated[Severity, Query(description="at least this severe")] = "info",
    since: Annotated[str | None, Query(description="raised within, e.g. 6h")] = None,
    all: Annotated[bool, Query(description="also resolved ones")] = False,
) -> AlertList:
    """Open alerts (with `all`, also resolved ones), critical first, then the newest: the
    list `moclo alerts --json` prints."""
    since_s = None if since is None else parse_since(since, now_ns=time.time_ns())
    found = await scoped_alerts(
        client,
        who,
        AlertFilter(
            tenant=tenant_param(who, tenant),
            device_id=identifier_param("device", device),
            min_severity=severity,
            since_s=since_s,
            include_resolved=all,
        ),
    )
    return AlertList(alerts=[alert_json(a) for a in found])


@router.get("/api/episodes", response_model=EpisodeList, responses=AUTH_ERRORS, tags=["alerts"])
async def episodes(
    who: Caller,
    client: Influx,
    tenant: str,
    device: str,
    since: Annotated[str | None, Query(description="e.g. 3d (default 1h)")] = None,
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: Annotated[str | None, Query()] = None,
) -> EpisodeList:
    """One device's alert episodes (raise to resolve, or still open) that overlap a time
    range: what the dashboard marks on its charts."""
    window = parse_series_request(
        device_id=identifier_param("device", device),
        device_type=None,
        tenant=tenant_param(who, tenant),
        fields=(),
        since=since,
        start=from_,
        end=to,
        every=None,
        agg=None,
        group_by=None,
        now_ns=time.time_ns(),
    )
    found = await device_episodes(
        client,
        tenant=tenant,
        device_id=device,
        start_ns=window.start_ns,
        end_ns=window.end_ns,
    )
    return EpisodeList(episodes=[e.as_dict() for e in found])
