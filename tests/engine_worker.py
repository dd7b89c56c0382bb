"""An ingest worker on the engine as a process of its own, so a test can kill -9 it:
`python -m tests.engine_worker PARTITION_SET` with the settings in the environment (MOCLO_*).
SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from core.settings import Settings
from ingest.options import IngestOptions
from ingest.service import run_ingest


async def main(settings: Settings, partition_set: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    options = IngestOptions(
        engine_partition_set=partition_set, snapshot_every_s=0.5, sweep_every_s=0.5
    )
    await run_ingest(settings, stop, options=options)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main(Settings.load(), sys.argv[1]))
