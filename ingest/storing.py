"""The batches the consumer has judged and is storing, as a chain of tasks in arrival order.

Each store runs only once the one before it is done: lines written, changes published and
messages acknowledged in arrival order; a failure skips every store after it (not acknowledged,
so the broker delivers them again) and is raised by `finished()`. The consumer keeps at most
one store waiting behind the one in flight (`room()`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from ingest.waits import first_of

log = logging.getLogger("moclo.ingest")


class Storing:
    """The batches being stored while the consumer prepares the next: a chain of tasks, each
    of which stores only once the one before it has, so lines are written, changes published
    and messages acknowledged in arrival order, and a failure skips everything after it."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None  # the last of the chain
        self._unfinished: list[asyncio.Task[None]] = []  # the chain's tasks not done, oldest first
        self._sent = asyncio.Event()
        self._sent_task: asyncio.Task[None] | None = None  # whose write `_sent` is about

    def start(self, storing: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
        """Runs `storing(sent)` once the stores before it are done; `sent` is set once its
        lines are on their way."""
        self._sent = sent = asyncio.Event()
        self.then(functools.partial(storing, sent))
        self._sent_task = self._task

    async def room(self) -> None:
        """Returns once at most one store is unfinished: a prepared batch waits behind at most
        the one being written, so what is held unacknowledged stays bounded (one batch in
        InfluxDB's hands, one waiting, one being prepared), as the broker's window is."""
        while True:
            self._unfinished = [task for task in self._unfinished if not task.done()]
            if len(self._unfinished) <= 1:
                return
            await asyncio.wait({self._unfinished[0]})

    async def on_its_way(self) -> None:
        """Returns once the write that can go now has gone out to InfluxDB (or storing ended):
        from then on InfluxDB works on it while the consumer does something else. At once when
        that write waits behind another: it goes out when that one is stored, and the consumer
        gives the event loop a turn between slices of its work."""
        self._unfinished = [task for task in self._unfinished if not task.done()]
        task = self._sent_task
        if task is not None and self._unfinished == [task] and not self._sent.is_set():
            await first_of(self._sent, task)

    def then(self, step: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Runs `step` once the stores before it are done (at once if none is), without
        waiting for them here: stores stay in order, and a failure of one before skips `step`
        and is raised by `finished()`."""
        before = self._task

        async def after_before() -> None:
            if before is not None:
                await before
            await step()

        self._task = asyncio.create_task(after_before(), name="store")
        self._unfinished.append(self._task)

    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def finished(self) -> None:
        """Returns once every batch is stored (at once if none is), or raises why one was not."""
        task, self._task = self._task, None
        self._unfinished, self._sent_task = [], None
        if task is not None:
            await task

    async def abandon(self) -> None:
        """Cancels storing (when the consumer stops on an error): not acknowledged, the batch
        is delivered again."""
        task, self._task = self._task, None
        self._unfinished, self._sent_task = [], None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
            if not task.cancelled() and task.exception() is not None:
                log.warning("storing the batch before failed too: %r", task.exception())
