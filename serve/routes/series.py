"""`/api/series`: a device's (or a fleet's) fields over time, the same request and the same
document as `moclo query --format json`, within the token's tenants."""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from query.request import parse_series_request
from query.series import run_series
from serve.auth import AUTH_ERRORS, Caller, require_tenant
from serve.errors import ErrorBody
from serve.state import Influx

router = APIRouter()


class SeriesDocument(BaseModel):
    """The document `moclo query --format json` prints (described in query/series.py)."""

    model_config = {"extra": "allow"}


@router.get(
    "/api/series",
    response_model=SeriesDocument,
    responses={**AUTH_ERRORS, 404: {"model": ErrorBody}},
    tags=["series"],
)
async def series(
    who: Caller,
    client: Influx,
    device: Annotated[str | None, Query(description="one device id")] = None,
    type: Annotated[str | None, Query(description="a fleet: every device of a type")] = None,
    tenant: Annotated[str | None, Query()] = None,
    field: Annotated[list[str] | None, Query(description="repeat for several")] = None,
    since: Annotated[str | None, Query(description="e.g. 6h, 7d (default 1h)")] = None,
    from_: Annotated[str | None, Query(alias="from", description="RFC 3339")] = None,
    to: Annotated[str | None, Query(description="RFC 3339 (default: now)")] = None,
    every: Annotated[str | None, Query(description="bucket, e.g. 5m, or auto")] = None,
    agg: Annotated[
        Literal["mean", "min", "max", "last", "count", "sum"] | None,
        Query(description="with every (default mean)"),
    ] = None,
    group_by: Annotated[Literal["device_id"] | None, Query()] = None,
) -> dict[str, Any]:
    """A device's (or a fleet's) fields over time, aggregated by InfluxDB: the same
    parameters and the same JSON document as `moclo query --format json`. A device is
    looked for, and a fleet aggregated, within the token's tenants only."""
    request = parse_series_request(
        device_id=device,
        device_type=type,
        tenant=tenant,
        fields=tuple(field or ()),
        since=since,
        start=from_,
        end=to,
        every=every,
        agg=agg,
        group_by=group_by,
        now_ns=time.time_ns(),
    )
    if request.tenant is not None:
        require_tenant(who, request.tenant)
    elif who.tenants is not None and len(who.tenants) == 1:
        (only,) = who.tenants  # so the document names it, rather than null for "all"
        request = dataclasses.replace(request, tenant=only)
    result = await run_series(client, dataclasses.replace(request, scope=who.tenants))
    return result.to_json()
