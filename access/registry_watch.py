"""Reading the registry again only when it changed, for the processes that keep some of it in
memory (ingest's registered devices, the gateway's accounts and devices, serve's live view).

A check is cheap: a `stat` of the file (was it replaced, e.g. restored from a backup? then a
new connection) and SQLite's `PRAGMA data_version`, which changes when another connection has
committed (WAL writes leave the file's mtime be). Only then is `read` run. The file is only
read here, never created: a registry that does not exist yet, or has no tables yet, is an
empty one. A registry that cannot be read for a moment (being restored, locked) keeps what was
known: a blip must not turn every device or operator into a stranger.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryWatch(Generic[T]):
    """`current` is what `read` last made of the registry (`empty` before and without one)."""

    def __init__(
        self,
        path: Path | str,
        read: Callable[[sqlite3.Connection], T],
        empty: T,
        *,
        log: logging.Logger,
        when_missing: str,  # what a missing registry means to this reader, for the warning
        check_every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.current = empty
        # Whether `current` was read from a registry, not the stand-in for a missing one (or
        # one without tables): a watcher of changes must not read the stand-in as "all gone".
        self.read_from_registry = False
        self.check_every_s = check_every_s
        self._read, self._empty = read, empty
        self._log, self._when_missing = log, when_missing
        self._clock = clock
        self._next_check = float("-inf")
        self._db: sqlite3.Connection | None = None
        self._file_id: tuple[int, int] | None = None
        self._data_version: int | None = None
        self._problem: str | None = None  # the last one logged, so it is logged once

    def due(self) -> bool:
        return self._clock() >= self._next_check

    def refresh(self) -> bool:
        """Reads the registry again if it changed; True if `current` was replaced. Call from
        one thread at a time; readers meanwhile see the old value (swapped whole)."""
        self._next_check = self._clock() + self.check_every_s
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self.close()
            self._report(f"the registry {self.path} does not exist (yet): {self._when_missing}")
            self.current, self.read_from_registry = self._empty, False
            return True
        try:
            if self._db is None or (stat.st_dev, stat.st_ino) != self._file_id:
                self.close()  # replaced (restored from a backup): a new file, a new connection
                self._db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
                self._file_id = (stat.st_dev, stat.st_ino)
            (version,) = self._db.execute("PRAGMA data_version").fetchone()
            if version == self._data_version:
                return False
            value = self._read(self._db)
        except sqlite3.Error as exc:
            if "no such table" in str(exc):
                self._report(f"the registry {self.path} has no tables yet: {self._when_missing}")
                self.current, self.read_from_registry = self._empty, False
                return True
            self.close()
            self._report(f"cannot read the registry {self.path} ({exc}); keeping the last known")
            return False
        self.current, self.read_from_registry = value, True
        self._data_version = version
        self._problem = None
        return True

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
        self._db, self._file_id, self._data_version = None, None, None

    def _report(self, problem: str) -> None:
        if problem != self._problem:
            self._log.warning("%s", problem)
            self._problem = problem
