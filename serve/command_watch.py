"""What became of commands, as ingest announces it on `{prefix}/{tenant}/command-status/{device}`:
the live hub (serve/live.py) hears every announcement once, shows it on the streams of the
device's tenant, and hands it to whoever waits for a command (`POST .../commands?wait=S`).

Only ingest may write command-status topics (the broker's ACL), but a payload that is not a
`CommandUpdate`, or names another device than its topic, is dropped and counted, never shown:
the hub trusts the topic, as it does for alert changes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from devices.commands import CommandUpdate
from devices.rfc3339 import format_us
from devices.topics import COMMAND_STATUS, command_status_subscription

WAITER_QUEUE = 64  # updates of one device held for one waiter; a command has a handful


class CommandWatch:
    """Routes command-status announcements to the people waiting for them."""

    def __init__(self, prefix: str) -> None:
        self.subscription = command_status_subscription(prefix)
        self._head = prefix + "/"
        self._waiters: dict[tuple[str, str], set[asyncio.Queue[CommandUpdate]]] = {}
        self.seen = 0
        self.dropped = 0  # not a CommandUpdate, or another device than its topic's

    def take(self, topic: str, payload: bytes) -> tuple[str, CommandUpdate] | None:
        """(tenant, update) of an announcement, handed to its waiters; None if dropped."""
        # `{prefix}/{tenant}/command-status/{device_id}`: the subscription guarantees the shape.
        tenant, level, device_id = topic[len(self._head) :].split("/")
        try:
            update = CommandUpdate.model_validate_json(payload)
        except ValidationError:
            self.dropped += 1
            return None
        if level != COMMAND_STATUS or update.device != device_id:
            self.dropped += 1
            return None
        self.seen += 1
        for queue in self._waiters.get((tenant, device_id), ()):
            with contextlib.suppress(asyncio.QueueFull):  # that waiter times out, no one else
                queue.put_nowait(update)
        return tenant, update

    @contextlib.contextmanager
    def watch(self, tenant: str, device_id: str) -> Iterator[asyncio.Queue[CommandUpdate]]:
        """The announcements about one device from now on, while the block runs. Enter it
        before asking, so an answer cannot come before anyone listens."""
        queue: asyncio.Queue[CommandUpdate] = asyncio.Queue(WAITER_QUEUE)
        key = (tenant, device_id)
        self._waiters.setdefault(key, set()).add(queue)
        try:
            yield queue
        finally:
            waiting = self._waiters[key]
            waiting.discard(queue)
            if not waiting:
                del self._waiters[key]


def update_json(tenant: str, update: CommandUpdate) -> dict[str, Any]:
    """An announcement as the API and the live stream show it: times in RFC 3339."""
    body = update.model_dump()
    body["ts"] = format_us(update.ts)
    return {"tenant": tenant, **body}
