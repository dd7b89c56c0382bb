"""One live event stream of `moclo serve`: what it wants, its bounded queue, and the bytes of
its `text/event-stream` response. The hub that feeds every stream is `live.py`.

Each stream has a bounded queue. A stream too slow to keep up is told so (`overflow`) and
closed; the dashboard reconnects and reloads its lists, so it never shows a stale picture
without knowing it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import orjson

QUEUE_EVENTS = 1_000  # per stream; at 4 reading batches a second that is minutes of slack


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """What one event stream wants; None means everything."""

    tenants: frozenset[str] | None = None
    device_id: str | None = None
    readings: bool = True

    def admits(self, tenant: str, device_id: str) -> bool:
        return (self.tenants is None or tenant in self.tenants) and (
            self.device_id is None or device_id == self.device_id
        )


@dataclass(frozen=True, slots=True)
class Event:
    """One Server-Sent Event: its name and its JSON data."""

    name: str  # alert, readings, overflow
    data: bytes

    def encode(self) -> bytes:
        return b"event: " + self.name.encode() + b"\ndata: " + self.data + b"\n\n"


@dataclass(eq=False)
class Stream:
    wants: StreamFilter
    queue: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(QUEUE_EVENTS))
    overflowed: bool = False
    owner: str | None = None  # the token it counts against

    def close(self) -> None:
        """Ends the stream after what it holds (the service is stopping)."""
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(Event("bye", b"{}"))

    def offer(self, event: Event) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            # Make room for the notice, so the client learns why its stream ends.
            self.queue.get_nowait()
            self.queue.put_nowait(Event("overflow", b'{"reason":"stream too slow; reload"}'))


class Hub(Protocol):
    """What a stream needs of the hub that feeds it (`live.LiveHub`)."""

    connected: asyncio.Event

    def release(self, stream: Stream) -> None: ...


async def event_stream(
    hub: Hub,
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
