"""Who may ask and whom they may ask about: the registry's accounts and devices, for the gateway.

The gateway decides from the registry alone: an account's role and tenant (never what a
message claims about its sender), and which devices a tenant has and of what type (a device
of another tenant is, for a tenant's request, a device that does not exist). The file is read
again when it changed, checked at most every `check_every_s` (a `stat` and SQLite's `PRAGMA
data_version`, as `access/known.py` does for readings), on a worker thread between batches, so
a new or revoked account counts within seconds and deciding costs two dictionary lookups.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("moclo.ingest.downlink")


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: str
    tenant: str | None  # None: a service account (ingest, serve) of every tenant


class Directory:
    def __init__(
        self,
        path: Path | str,
        *,
        check_every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.check_every_s = check_every_s
        self._clock = clock
        self._next_check = float("-inf")
        self._db: sqlite3.Connection | None = None
        self._file_id: tuple[int, int] | None = None
        self._version: int | None = None
        self._accounts: dict[str, Account] = {}
        self._devices: dict[tuple[str, str], str] = {}  # (tenant, device id) -> device type
        self._problem: str | None = None

    def account(self, name: str) -> Account | None:
        """The active account `name`, or None."""
        return self._accounts.get(name)

    def device_type(self, tenant: str, device_id: str) -> str | None:
        """The type of the active device `device_id` of `tenant`, or None."""
        return self._devices.get((tenant, device_id))

    def due(self) -> bool:
        return self._clock() >= self._next_check

    def refresh(self) -> bool:
        """Reads the registry again if it changed; True if it was read. Call from one thread
        at a time; lookups meanwhile see the old contents (each map is swapped whole)."""
        self._next_check = self._clock() + self.check_every_s
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._report(f"the registry {self.path} does not exist: every command is refused")
            self.close()
            self._accounts, self._devices = {}, {}
            return False
        try:
            if self._db is None or (stat.st_dev, stat.st_ino) != self._file_id:
                self.close()  # replaced (restored from a backup): a new file, a new connection
                self._db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
                self._file_id = (stat.st_dev, stat.st_ino)
            # Changes when another connection commits (WAL writes leave the file's mtime be).
            (version,) = self._db.execute("PRAGMA data_version").fetchone()
            if version == self._version:
                return False
            accounts = self._db.execute(
                "SELECT name, role, tenant FROM accounts WHERE revoked_at IS NULL"
            ).fetchall()
            devices = self._db.execute(
                "SELECT tenant, device_id, device_type FROM devices WHERE revoked_at IS NULL"
            ).fetchall()
        except sqlite3.Error as exc:
            # Keep what was known: a registry being restored or locked for a moment must not
            # turn every operator into a stranger.
            self.close()
            self._report(f"cannot read the registry {self.path} ({exc}); keeping the last known")
            return False
        self._accounts = {name: Account(name, role, tenant) for name, role, tenant in accounts}
        self._devices = {(tenant, device_id): kind for tenant, device_id, kind in devices}
        self._version = version
        self._problem = None
        return True

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
        self._db, self._file_id, self._version = None, None, None

    def _report(self, problem: str) -> None:
        if problem != self._problem:
            log.warning("%s", problem)
            self._problem = problem
