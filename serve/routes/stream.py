"""`/api/stream`: the live stream of alert changes and newest readings, as Server-Sent Events,
within the token's tenants (serve/live.py runs it)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from serve import auth
from serve.auth import AUTH_ERRORS, Caller, require_tenant
from serve.live_stream import StreamFilter, event_stream
from serve.routes.scope import checked, identifier_param
from serve.state import Hub

router = APIRouter()


@router.get(
    "/api/stream",
    response_class=StreamingResponse,
    responses={**AUTH_ERRORS, 200: {"content": {"text/event-stream": {}}}},
    tags=["live"],
)
async def stream(
    request: Request,
    who: Caller,
    hub: Hub,
    tenant: Annotated[list[str] | None, Query(description="repeat for several")] = None,
    device: Annotated[str | None, Query()] = None,
    readings: Annotated[bool, Query(description="also the newest readings")] = True,
) -> StreamingResponse:
    """Server-Sent Events, at most 8 streams at once per token (429 beyond): `hello`
    first; `alert` for every alert change as ingest publishes it (the JSON of `moclo alerts
    --json`); `readings` every 250 ms with the newest validated reading of each device that
    sent one; `overflow` before the stream closes when the client reads too slowly
    (reconnect and reload); `unauthorized` before it closes when its token was revoked or
    its session ended. Only the token's tenants are ever sent."""
    chosen = None if not tenant else frozenset(checked("tenant", t) for t in tenant)
    for name in sorted(chosen or ()):
        require_tenant(who, name)
    wants = StreamFilter(
        tenants=chosen or who.tenants,
        device_id=identifier_param("device", device),
        readings=readings,
    )

    signed_in = auth.still_signed_in(request, who)

    async def still_valid() -> bool:
        return await asyncio.to_thread(signed_in)

    ended = "the session ended" if request.state.session else "the token was revoked"
    # Reserved here, so that a stream over the token's limit is refused before any answer.
    reserved = hub.reserve(wants, owner=who.token_id)

    async def release() -> None:
        # Also when the answer ends before the stream's generator ever ran.
        hub.release(reserved)

    return StreamingResponse(
        event_stream(hub, reserved, still_valid=still_valid, ended=ended),
        background=BackgroundTask(release),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
