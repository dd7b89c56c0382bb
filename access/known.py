"""The registered devices as a set in memory, for ingest: a lookup per reading costs a set
membership test, and a change to the registry (a device added or revoked) is seen within
`check_every_s` without restarting ingest.

How a change is noticed cheaply, and what a missing or unreadable registry means:
`registry_watch.py`.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from access.registry_watch import RegistryWatch
from devices.topics import DeviceAddress

log = logging.getLogger("moclo.ingest.registry")


class RegisteredDevices:
    def __init__(
        self,
        path: Path | str,
        *,
        check_every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.generation = 0  # +1 each time the set is read again
        self._watch: RegistryWatch[frozenset[DeviceAddress]] = RegistryWatch(
            path,
            _active_devices,
            frozenset(),
            log=log,
            when_missing="no device is registered",
            check_every_s=check_every_s,
            clock=clock,
        )
        self._addresses: frozenset[DeviceAddress] = frozenset()

    @property
    def path(self) -> Path:
        return self._watch.path

    def __contains__(self, address: object) -> bool:
        return address in self._addresses

    def __len__(self) -> int:
        return len(self._addresses)

    def due(self) -> bool:
        return self._watch.due()

    def refresh(self) -> bool:
        """Reads the registry again if it changed; True if the set of devices changed. Safe
        to call from a worker thread, one call at a time; lookups meanwhile see the old set."""
        if not self._watch.refresh():
            return False
        addresses = self._watch.current
        if addresses == self._addresses and self.generation:
            return False
        self._addresses = addresses  # one reference swap: readers see the old or the new set
        self.generation += 1
        return True

    def close(self) -> None:
        self._watch.close()


def _active_devices(db: sqlite3.Connection) -> frozenset[DeviceAddress]:
    rows = db.execute(
        "SELECT tenant, device_type, device_id FROM devices WHERE revoked_at IS NULL"
    ).fetchall()
    return frozenset(DeviceAddress(*row) for row in rows)
