"""Stopping on Ctrl-C or SIGTERM: the first signal asks for a clean stop, the second is final.

The handlers are installed with `signal.signal`, not `loop.add_signal_handler`, so that they
cooperate with uvicorn (serve/server.py): while it serves, uvicorn keeps the process's handlers
aside, takes a signal itself to close the HTTP server, then puts them back and raises the signal
again (its documented "cooperative signal handling"), so each signal reaches these handlers
exactly once. A handler on the loop would be called twice, the second time taken for a second
Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from types import FrameType

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def install_stop_handlers(stop: asyncio.Event) -> None:
    """Sets `stop` (on the running loop) at the first SIGINT or SIGTERM, exits at the second.
    Once the loop has closed, a signal does what it did before these handlers were installed."""
    loop = asyncio.get_running_loop()
    before = {signum: signal.getsignal(signum) for signum in _SIGNALS}
    asked: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if loop.is_closed():
            for each, handler in before.items():
                signal.signal(each, handler)
            signal.raise_signal(signum)
            return
        if asked:
            # Second signal: leave now. Nothing unstored was acknowledged, so nothing is lost;
            # the broker delivers whatever was in hand again.
            print(
                f"\n{signal.Signals(signum).name} again: exiting at once",
                file=sys.stderr,
                flush=True,
            )
            os._exit(128 + signum)
        asked.append(signum)
        print(
            f"\n{signal.Signals(signum).name}: stopping cleanly (again to exit at once)",
            file=sys.stderr,
            flush=True,
        )
        # A signal handler runs between two steps of whatever the loop was doing: hand over.
        loop.call_soon_threadsafe(stop.set)

    for signum in _SIGNALS:
        signal.signal(signum, on_signal)
