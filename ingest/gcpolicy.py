"""How ingest asks Python's garbage collector to behave while it consumes.

Measured on a backlog of readings: with CPython's defaults the collector took about a fifth of
ingest's CPU, and a full collection paused the event loop for 30-80 ms, because every
collection of the oldest generation walked every object ingest had imported or restored
(pydantic's schemas, the alert engine's state). So, once started, what exists then is frozen
(`gc.freeze()`): long-lived, never garbage, never walked again.

The thresholds stay CPython's (700, 10, 10). Raising them (the youngest generation every
50,000 allocations) saved a little more CPU but made peak RSS grow with the length of a
backlog: 66 → 117 MB from 50,000 to 400,000 queued readings of one fleet, against 61 → 61 MB
with the freeze alone (`benchmarks/ingest_memory.py`, same fleet, same session).

Undone when ingest stops, since `moclo ingest` is not the only user of the process (tests and
benchmarks run ingest inside theirs).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_collector(*, enabled: bool = True) -> Iterator[None]:
    """Within: start-up objects frozen (see the module docstring)."""
    if not enabled:
        yield
        return
    # No gc.collect() first: garbage frozen now is collected after unfreeze(), and collecting
    # here would run other code's finalisers (and their warnings) at a strange moment.
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
