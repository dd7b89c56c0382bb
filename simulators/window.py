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

    def take(self, abort: threading.Event | None = None) -> bool:
        """A slot for one more message; False if `abort` was set while waiting for one (the
        broker may be gone: waiting in slices keeps a stop possible)."""
        while not self._slots.acquire(timeout=0.2):
            if abort is not None and abort.is_set():
                return False
        return True

    def give(self) -> None:
        self._slots.release()

    def drained(self, timeout_s: float, abort: threading.Event | None = None) -> bool:
        """True once every message was acknowledged; False if that took over `timeout_s`, or
        `abort` was set meanwhile."""
        deadline = time.monotonic() + timeout_s
        taken = 0
        try:
            while taken < self.size:
                left = deadline - time.monotonic()
                if left <= 0 or (abort is not None and abort.is_set()):
                    return False
                if self._slots.acquire(timeout=min(left, 0.2)):
                    taken += 1
            return True
        finally:
            for _ in range(taken):
                self._slots.release()
