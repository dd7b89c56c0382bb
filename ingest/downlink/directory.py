"""Who may ask and whom they may ask about: the registry's accounts and devices, for the gateway.

The gateway decides from the registry alone: an account's role and tenant (never what a
message claims about its sender), and which devices a tenant has and of what type (a device
of another tenant is, for a tenant's request, a device that does not exist). The file is read
again when it changed, checked at most every `check_every_s` (`access/registry_watch.py`, as
for readings), on a worker thread between batches, so a new or revoked account counts within
seconds and deciding costs two dictionary lookups.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from access.registry_watch import RegistryWatch

log = logging.getLogger("moclo.ingest.downlink")


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: str
    tenant: str | None  # None: a service account (ingest, serve) of every tenant


@dataclass(frozen=True, slots=True)
class _Contents:
    accounts: dict[str, Account]
    devices: dict[tuple[str, str], str]  # (tenant, device id) -> device type


_NOTHING = _Contents({}, {})


class Directory:
    def __init__(
        self,
        path: Path | str,
        *,
        check_every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._watch: RegistryWatch[_Contents] = RegistryWatch(
            path,
            _read,
            _NOTHING,
            log=log,
            when_missing="every command is refused",
            check_every_s=check_every_s,
            clock=clock,
        )

    @property
    def path(self) -> Path:
        return self._watch.path

    def account(self, name: str) -> Account | None:
        """The active account `name`, or None."""
        return self._watch.current.accounts.get(name)

    def device_type(self, tenant: str, device_id: str) -> str | None:
        """The type of the active device `device_id` of `tenant`, or None."""
        return self._watch.current.devices.get((tenant, device_id))

    def due(self) -> bool:
        return self._watch.due()

    def refresh(self) -> bool:
        """Reads the registry again if it changed; True if it was read. Call from one thread
        at a time; lookups meanwhile see the old contents (swapped whole)."""
        return self._watch.refresh()

    def close(self) -> None:
        self._watch.close()


def _read(db: sqlite3.Connection) -> _Contents:
    accounts = db.execute("SELECT name, role, tenant FROM accounts WHERE revoked_at IS NULL")
    devices = db.execute(
        "SELECT tenant, device_id, device_type FROM devices WHERE revoked_at IS NULL"
    )
    return _Contents(
        {name: Account(name, role, tenant) for name, role, tenant in accounts.fetchall()},
        {(tenant, device_id): kind for tenant, device_id, kind in devices.fetchall()},
    )
