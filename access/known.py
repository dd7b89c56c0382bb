"""The registered devices as a set in memory, for ingest: a lookup per reading costs a set
membership test, and a change to the registry (a device added or revoked) is seen within
`check_every_s` without restarting ingest.

A check is cheap: a `stat` of the file (was it replaced, e.g. restored from a backup?) and
SQLite's `PRAGMA data_version`, which changes when another connection has committed. Only then
are the active devices read again. The file is only read here, never created: a registry that
does not exist yet is an empty one.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

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
        self.path = Path(path)
        self.check_every_s = check_every_s
        self.generation = 0  # +1 each time the set is read again
        self._clock = clock
        self._addresses: frozenset[DeviceAddress] = frozenset()
        self._db: sqlite3.Connection | None = None
        self._file_id: tuple[int, int] | None = None
        self._data_version: int | None = None
        self._next_check = float("-inf")
        self._problem: str | None = None  # the last one logged, so it is logged once

    def __contains__(self, address: object) -> bool:
        return address in self._addresses

    def __len__(self) -> int:
        return len(self._addresses)

    def due(self) -> bool:
        return self._clock() >= self._next_check

    def refresh(self) -> bool:
        """Reads the registry again if it changed; True if the set of devices changed. Safe
        to call from a worker thread, one call at a time; lookups meanwhile see the old set."""
        self._next_check = self._clock() + self.check_every_s
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._close()
            self._report(f"the registry {self.path} does not exist (yet): no device is registered")
            return self._replace(frozenset())
        file_id = (stat.st_dev, stat.st_ino)
        try:
            if self._db is None or file_id != self._file_id:
                self._close()
                self._db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
                self._file_id = file_id
            (version,) = self._db.execute("PRAGMA data_version").fetchone()
            if version == self._data_version:
                return False
            rows = self._db.execute(
                "SELECT tenant, device_type, device_id FROM devices WHERE revoked_at IS NULL"
            ).fetchall()
        except sqlite3.Error as exc:
            if "no such table" in str(exc):
                self._report(f"the registry {self.path} has no devices table yet: none registered")
                return self._replace(frozenset())
            # Keep what was known: a registry being restored or briefly locked should not make
            # every device unregistered.
            self._close()
            self._report(f"cannot read the registry {self.path} ({exc}); keeping the last known")
            return False
        self._data_version = version
        self._problem = None
        return self._replace(frozenset(DeviceAddress(*row) for row in rows))

    def close(self) -> None:
        self._close()

    def _replace(self, addresses: frozenset[DeviceAddress]) -> bool:
        if addresses == self._addresses and self.generation:
            return False
        self._addresses = addresses  # one reference swap: readers see the old or the new set
        self.generation += 1
        return True

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
        self._db = None
        self._file_id = None
        self._data_version = None

    def _report(self, problem: str) -> None:
        if problem != self._problem:
            log.warning("%s", problem)
            self._problem = problem
