"""What the consumer needs of a source: MQTT (`ingest/source.py`) or the distributed engine's
partitions (`ingest/engine_source.py`). Both acknowledge a message only when told it is stored."""

from __future__ import annotations

from typing import Protocol

from ingest.source import Message


class BatchSource(Protocol):
    subscription: str  # what it consumes, for people
    connected: bool
    caught_up: bool  # the last batch took everything that had arrived
    messages_received: int

    async def start(self, *, timeout_s: float = 15.0) -> None: ...

    async def close(self) -> None: ...

    async def next_batch(self, *, linger_s: float) -> list[Message]: ...

    def take_pending(self, at_most: int) -> list[Message]: ...

    @property
    def pending_count(self) -> int: ...

    @property
    def pending_bytes(self) -> int: ...

    def ack(self, messages: list[Message]) -> int: ...
