"""A service's coroutine on its own thread and event loop, so tests stay plain synchronous
code: ingest, serve and the notifier are run this way (`RunningIngest`, `RunningServe`,
`RunningNotifier`)."""

from __future__ import annotations

import asyncio
import faulthandler
import sys
import threading
from typing import Self


class ThreadedService:
    """Entering starts `serve` and waits until it is ready; leaving (or `stop`) sets its stop
    event and waits for it to end. What it raised is raised in the test, there."""

    name = "service"

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)

    async def serve(self, stop: asyncio.Event) -> None:
        """Runs until `stop` is set; calls `self.ready()` (or sets `self.ready_event()`) once
        the test may go on."""
        raise NotImplementedError

    def ready(self) -> None:
        self._ready.set()

    def ready_event(self) -> tuple[asyncio.Event, asyncio.Future[object]]:
        """An event for services that signal readiness by setting one, and the waiter to
        cancel once the service ends."""
        event = asyncio.Event()
        waiter: asyncio.Future[object] = asyncio.ensure_future(event.wait())
        waiter.add_done_callback(lambda _: self._ready.set())
        return event, waiter

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError(f"{self.name} did not become ready in 30s")
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self._thread.is_alive():
            self._dump_tasks()
            raise AssertionError(f"{self.name} did not stop within 30s")
        if self.error is not None:
            raise self.error

    def _dump_tasks(self) -> None:
        """Where it hangs: every thread, and every task of its event loop (to stderr)."""
        faulthandler.dump_traceback(all_threads=True)
        dumped = threading.Event()

        def dump() -> None:
            for task in asyncio.all_tasks():
                task.print_stack(file=sys.stderr)
            dumped.set()

        if self._loop is not None:
            self._loop.call_soon_threadsafe(dump)
            dumped.wait(5)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.serve(self._stop)

        try:
            asyncio.run(run())
        except BaseException as exc:  # surfaced to the test by __enter__/stop
            self.error = exc
        finally:
            self._ready.set()
