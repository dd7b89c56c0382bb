"""`GET /api/oncall`: who is on call now in each rotation of the notify file (MOCLO_NOTIFY_FILE),
within the token's tenants, as the notifier would page them (`notify.oncall.on_call`): the one
on call, the rest in line after them, and when the turn passes to the next.

Scoped like every endpoint: a rotation of a tenant the token does not see is not listed, and
naming such a tenant is a 403. Without a notify file the list is empty (nobody is paged). Only
names are told, never how anyone is reached.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from core.settings import Settings
from devices.rfc3339 import format_us
from notify.model import Rotation
from notify.oncall import on_call, override_at, shifts
from serve.auth import AUTH_ERRORS, Caller
from serve.errors import ErrorBody
from serve.notify_file import NotifyFileReader, NotifyFileUnusable
from serve.routes.scope import tenant_param

router = APIRouter()


class OnCall(BaseModel):
    rotation: str
    tenant: str
    on_call: str = Field(description="paged first now")
    next: list[str] = Field(description="the rest in line, in the order escalation reaches them")
    until: str | None = Field(
        description="when the turn passes on (RFC 3339, UTC), if within a shift from now"
    )
    override: bool = Field(description="an override put the one on call first")


class OnCallList(BaseModel):
    at: str = Field(description="the moment answered for (RFC 3339, UTC)")
    rotations: list[OnCall] = Field(description="by tenant, then rotation")


def keep(app: FastAPI, settings: Settings) -> None:
    """Reads the notify file of `settings` for this router and the acknowledgement links."""
    app.state.notify_file = NotifyFileReader(settings.notify_file)


def rfc3339(moment: datetime) -> str:
    return format_us(round(moment.timestamp() * 1_000_000) * 1_000)


def now_on_call(rotation: Rotation, at: datetime) -> OnCall:
    line = on_call(rotation, at)
    # Who is first over the next shift: the first piece ends when someone else takes over,
    # unless it runs to the horizon (before the first handoff, a long override, one person).
    horizon = at + timedelta(seconds=rotation.shift_s)
    pieces = shifts(rotation, at, horizon)
    until = pieces[0][1] if pieces and pieces[0][1] < horizon else None
    return OnCall(
        rotation=rotation.name,
        tenant=rotation.tenant,
        on_call=line[0],
        next=list(line[1:]),
        until=None if until is None else rfc3339(until),
        override=override_at(rotation, at) is not None,
    )


@router.get(
    "/api/oncall",
    response_model=OnCallList,
    responses={**AUTH_ERRORS, 503: {"model": ErrorBody}},
    tags=["notifications"],
)
async def oncall(
    who: Caller,
    request: Request,
    tenant: Annotated[str | None, Query(description="default: all the token's")] = None,
) -> OnCallList | JSONResponse:
    """Who is on call now in each rotation of the token's tenants; empty without a notify
    file. 503 if the notify file has mistakes (`moclo notify check` lists them)."""
    scope = tenant_param(who, tenant)
    reader: NotifyFileReader = request.app.state.notify_file
    try:
        config = await asyncio.to_thread(reader.config)
    except NotifyFileUnusable as exc:
        return JSONResponse({"error": str(exc)}, status_code=503)
    at = datetime.now(UTC)
    rotations = [] if config is None else [
        r for r in config.rotations.values()
        if who.sees(r.tenant) and scope in (None, r.tenant)
    ]  # fmt: skip
    rotations.sort(key=lambda r: (r.tenant, r.name))
    return OnCallList(
        at=rfc3339(at),
        rotations=[now_on_call(r, at) for r in rotations],
    )
