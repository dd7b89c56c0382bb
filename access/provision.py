"""Provisioning that can run on every start (docker-compose's `provision` service): service
accounts and a simulated fleet's device logins, issued once and kept while their secret files
are there.

What is registered and has its secret in its file is kept. What is missing is issued; what is
registered but whose secret was lost (a deleted volume, a new file path) is revoked and issued
again, so no login is left that nobody holds the password of. Secrets go only to 0600 files;
this module returns counts and names, never a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from access.credentials import CredentialsError, load_credentials
from access.issued import IssuedFileError, write_device_credentials, write_password_file
from access.passwords import verify_password
from access.registry import (
    Credentials,
    DeviceRecord,
    DeviceSpec,
    Registry,
    RegistryError,
    Role,
)

Outcome = Literal["kept", "issued", "reissued"]


@dataclass(frozen=True, slots=True)
class AccountPlan:
    """A service account whose password lives in `password_file`."""

    role: Role
    name: str
    password_file: Path
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class DevicesOutcome:
    kept: int
    issued: int  # new devices
    reissued: int  # registered devices whose credentials were not in the file


def ensure_account(registry: Registry, plan: AccountPlan) -> Outcome:
    """Keeps the account if it is active and its password file holds its password, else issues
    it (again) and writes the password file."""
    active = {a.name: a for a in registry.accounts()}
    existing = active.get(plan.name)
    if (
        existing is not None
        and existing.role == plan.role
        and existing.tenant == plan.tenant
        and _works(registry, plan.name, _read_password(plan.password_file))
    ):
        return "kept"
    if existing is not None and (existing.role, existing.tenant) != (plan.role, plan.tenant):
        # Refused before revoking: a revoked name comes back only with the same reads
        # (Registry.add_account), so revoking first would lose the working account.
        raise RegistryError(
            f"account {plan.name!r} is the {existing.role} account; a name keeps its role "
            f"(its sessions on the broker keep what it subscribed to): give the {plan.role} "
            "account another name"
        )
    if existing is not None:
        registry.revoke_account(plan.name)
    credentials = registry.add_account(plan.role, plan.name, tenant=plan.tenant)
    try:
        write_password_file(plan.password_file, credentials.password)
    except IssuedFileError:
        registry.revoke_account(plan.name)  # nobody could log in with it: take it back
        raise
    return "issued" if existing is None else "reissued"


def ensure_devices(
    registry: Registry, specs: Sequence[DeviceSpec], credentials_file: Path
) -> DevicesOutcome:
    """Makes `credentials_file` hold a working login for every device of `specs` (the format
    `moclo simulate --credentials` reads), registering or re-issuing only what is missing."""
    try:
        held = load_credentials(credentials_file) if credentials_file.exists() else {}
    except CredentialsError as exc:
        raise IssuedFileError(str(exc)) from None
    registered = {(d.tenant, d.device_id): d for d in registry.devices()}
    hashes = _hashes(registry)
    kept: list[tuple[DeviceRecord, Credentials]] = []
    missing: list[DeviceSpec] = []
    reissued = 0
    for spec in specs:
        record = registered.get((spec.tenant, spec.device_id))
        login = held.get(f"{spec.tenant}.{spec.device_id}")
        if (
            record is not None
            and record.device_type == spec.device_type
            and login is not None
            and login[0] == record.username
            and _works(registry, record.username, login[1], hashes)
        ):
            kept.append((record, Credentials(*login)))
            continue
        if record is not None:
            registry.revoke_device(spec.tenant, spec.device_id)
            reissued += 1
        missing.append(spec)

    def save(issued: list[tuple[DeviceRecord, Credentials]]) -> None:
        write_device_credentials(credentials_file, [*kept, *issued])

    if missing or not credentials_file.exists():
        registry.add_devices(missing, before_commit=save)
    return DevicesOutcome(kept=len(kept), issued=len(missing) - reissued, reissued=reissued)


def _hashes(registry: Registry) -> dict[str, str]:
    return {login.username: login.password_hash for login in registry.mqtt_logins()}


def _works(
    registry: Registry, username: str, password: str | None, hashes: dict[str, str] | None = None
) -> bool:
    """Whether the broker would accept this login: the file may hold an older password."""
    stored = (hashes if hashes is not None else _hashes(registry)).get(username)
    return password is not None and stored is not None and verify_password(password, stored)


def _read_password(path: Path) -> str | None:
    try:
        return path.read_text().rstrip("\n") or None
    except OSError:
        return None
