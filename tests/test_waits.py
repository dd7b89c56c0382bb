"""ingest/waits.py: `first_of` says whether the first of its waitables came first."""

from __future__ import annotations

import asyncio


def test_first_of_events_futures_and_timeouts() -> None:
    from ingest.waits import first_of

    async def main() -> None:
        first, second = asyncio.Event(), asyncio.Event()
        second.set()
        assert not await first_of(first, second)
        first.set()
        assert await first_of(first, second)
        assert not await first_of(asyncio.Event(), timeout_s=0.01)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        assert await first_of(future, asyncio.Event())
        await asyncio.sleep(0)  # a cancelled waiter ends on the next turn
        assert len(asyncio.all_tasks()) == 1  # the event waiters are cancelled, not left

    asyncio.run(main())
