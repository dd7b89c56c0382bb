"""Waiting for the first of several things, which every loop of the service does."""

from __future__ import annotations

import asyncio
from typing import Any


async def first_of(
    *waitables: asyncio.Event | asyncio.Future[Any], timeout_s: float | None = None
) -> bool:
    """Waits until the first event is set or future done (or the timeout passes); True if
    the first one is done."""
    first = waitables[0]
    tasks = [
        asyncio.ensure_future(w.wait()) if isinstance(w, asyncio.Event) else w for w in waitables
    ]
    done, _ = await asyncio.wait(tasks, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    for task, waitable in zip(tasks, waitables, strict=True):
        if isinstance(waitable, asyncio.Event):
            task.cancel()
    return tasks[0] in done or (isinstance(first, asyncio.Event) and first.is_set())
