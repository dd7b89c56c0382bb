"""The window of unacknowledged messages a publisher may have out: bounded, and drainable."""

from __future__ import annotations

import threading
import time


class AckWindow:
    """`take()` before sending blocks while `size` messages await their acknowledgement;
    `give()` when one is acknowledged; `drained()` waits until none is outstanding."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots = threading.BoundedSemaphore(size)

    def take(self) -> None:
        self._slots.acquire()

    def give(self) -> None:
        self._slots.release()

    def drained(self, timeout_s: float) -> bool:
        """True once every message was acknowledged, False if that took over `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        taken = 0
        try:
            while taken < self.size:
                if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    return False
                taken += 1
            return True
        finally:
            for _ in range(taken):
                self._slots.release()
