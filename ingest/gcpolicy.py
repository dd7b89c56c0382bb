"""How ingest asks Python's garbage collector to behave while it consumes.

Measured on a backlog of readings: with CPython's defaults (thresholds 700, 10, 10) the
collector took about a fifth of ingest's CPU, and a full collection paused the event loop for
30-80 ms, because every collection of the oldest generation walked every object ingest had
imported or restored (pydantic's schemas, the alert engine's state). So, once started:

- what exists then is frozen (`gc.freeze()`): long-lived, never garbage, never walked again;
- the youngest generation is collected every 50,000 net allocations instead of 700. A batch's
  objects are freed by reference counting when it is done, so most batches never meet a
  collection at all; reference cycles (rare here) are still collected, a little later.

Both are undone when ingest stops, since `moclo ingest` is not the only user of the process
(tests and benchmarks run ingest inside theirs).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

THRESHOLDS = (50_000, 20, 100)


@contextlib.contextmanager
def quiet_collector(*, enabled: bool = True) -> Iterator[None]:
    """Within: start-up objects frozen and collections rarer (see the module docstring)."""
    if not enabled:
        yield
        return
    previous = gc.get_threshold()
    # No gc.collect() first: garbage frozen now is collected after unfreeze(), and collecting
    # here would run other code's finalisers (and their warnings) at a strange moment.
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()
