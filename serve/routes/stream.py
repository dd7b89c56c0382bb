"""`/api/stream`: the live stream of alert changes, command outcomes and newest readings, as
Server-Sent Events, within the token's tenants (serve/live.py runs it)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from serve import auth
from serve.auth import AUTH_ERRORS, Caller, require_tenant
from serve.live import LiveHub, Stream, StreamFilter
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
    --json`); `command` for every step of a command's life as ingest announces it (sent,
    refused, succeeded, ...); `readings` every 250 ms with the newest validated reading of
    each device that sent one; `overflow` before the stream closes when the client reads too slowly
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


async def event_stream(
    hub: LiveHub,
    stream: Stream,
    *,
    heartbeat_s: float = 15.0,
    still_valid: Callable[[], Awaitable[bool]] | None = None,
    recheck_s: float = 2.0,
    ended: str = "the token was revoked",
) -> AsyncIterator[bytes]:
    """The bytes of one `text/event-stream` response: a `hello`, then events until the client
    goes or overflows; a comment line every `heartbeat_s` keeps proxies from closing it.

    `still_valid` is asked every `recheck_s` whether the stream's token (or session) is still
    valid; when it is not, an `unauthorized` event saying `ended` ends the stream. `stream` was
    reserved from `hub`, and is released when this ends.
    """
    try:
        hello = {"connected": hub.connected.is_set(), "retry_ms": 2000}
        yield b"retry: 2000\nevent: hello\ndata: " + orjson.dumps(hello) + b"\n\n"
        loop = asyncio.get_running_loop()
        heartbeat_at = loop.time() + heartbeat_s
        check_at = loop.time() + recheck_s
        while True:
            wait_s = heartbeat_at if still_valid is None else min(heartbeat_at, check_at)
            event = None
            with contextlib.suppress(TimeoutError):
                event = await asyncio.wait_for(stream.queue.get(), max(0.0, wait_s - loop.time()))
            now = loop.time()
            if still_valid is not None and now >= check_at:
                check_at = now + recheck_s
                if not await still_valid():
                    yield b"event: unauthorized\ndata: " + orjson.dumps({"reason": ended}) + b"\n\n"
                    return
            if event is None:
                if now >= heartbeat_at:
                    heartbeat_at = now + heartbeat_s
                    yield b": keep-alive\n\n"
                continue
            if event.name == "bye":
                return
            yield event.encode()
            if event.name == "overflow":
                return
    finally:
        hub.release(stream)
