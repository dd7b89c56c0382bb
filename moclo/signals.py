"""Stopping on Ctrl-C or SIGTERM: the first signal asks for a clean stop, the second is final."""

from __future__ import annotations

import asyncio
import os
import signal
import sys


def install_stop_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            # Second signal: leave now. Nothing unstored was acknowledged, so nothing is lost;
            # the broker delivers whatever was in hand again.
            print(f"\n{signal.Signals(signum).name} again: exiting at once", file=sys.stderr)
            os._exit(128 + signum)
        print(
            f"\n{signal.Signals(signum).name}: stopping cleanly (again to exit at once)",
            file=sys.stderr,
            flush=True,
        )
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
