"""Review of batch4: the silence sweep and the look for expired commands are judged at once and
stored after the batch in flight (`_Storing.then` in ingest/consumer.py). What must hold: the
step runs only once the batch before is stored, never if that failed (its alerts are then
neither announced nor stored, and the failure is what `finished()` raises), and a chain of
steps keeps its order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from ingest.consumer import _Storing


class WriteFailed(Exception):
    pass


def test_a_step_waits_for_the_batch_in_flight_and_keeps_order() -> None:
    done: list[str] = []

    async def main() -> None:
        storing = _Storing()
        release = asyncio.Event()

        async def batch(sent: asyncio.Event) -> None:
            sent.set()
            await release.wait()
            done.append("batch")

        def step(name: str) -> Callable[[], Coroutine[Any, Any, None]]:
            async def run() -> None:
                done.append(name)

            return run

        storing.start(batch)
        storing.then(step("sweep"))
        storing.then(step("expiry"))
        await asyncio.sleep(0)  # give the chain every chance to run early
        await asyncio.sleep(0)
        assert done == []  # nothing stored or announced before the batch in flight is
        release.set()
        await storing.finished()

    asyncio.run(main())
    assert done == ["batch", "sweep", "expiry"]


def test_a_failed_write_before_skips_the_step_and_is_raised() -> None:
    ran: list[str] = []

    async def main() -> None:
        storing = _Storing()

        async def batch(sent: asyncio.Event) -> None:
            sent.set()
            raise WriteFailed("InfluxDB refused the batch")

        async def sweep() -> None:
            ran.append("sweep")

        storing.start(batch)
        storing.then(sweep)
        with pytest.raises(WriteFailed):
            await storing.finished()
        # Positive control: with nothing before it, the same step does run.
        storing.then(sweep)
        await storing.finished()

    asyncio.run(main())
    assert ran == ["sweep"]  # once: only the control's


def test_abandoning_cancels_the_batch_and_the_steps_after_it() -> None:
    """A SIGTERM's cancellation between a batch's write and the sweep chained on it: neither
    the batch (so it is not acknowledged) nor the step after it runs to completion."""
    ran: list[str] = []

    async def main() -> None:
        storing = _Storing()
        started = asyncio.Event()

        async def batch(sent: asyncio.Event) -> None:
            sent.set()
            started.set()
            try:
                await asyncio.Event().wait()  # a write that never ends
            except asyncio.CancelledError:
                ran.append("batch cancelled")  # so never acknowledged
                raise

        async def sweep() -> None:
            ran.append("sweep")

        storing.start(batch)
        storing.then(sweep)
        await started.wait()
        await storing.abandon()
        await storing.finished()  # nothing left

    asyncio.run(main())
    assert ran == ["batch cancelled"]
