"""The registry: which devices and accounts exist, and the hashes of their MQTT passwords.

One SQLite file (`MOCLO_REGISTRY`, default `.moclo/registry.sqlite`), created on first use with
mode 0600, in WAL mode so that ingest can read it while a command changes it. Secrets are
generated here and returned once, in `Credentials`; only their hashes (Mosquitto's format, see
`access/passwords.py`) are stored, so a lost secret is replaced by revoking and adding again.

Revoking keeps the row (with `revoked_at`) as a record of who existed; a revoked device or
account may be added again, with new credentials. Usernames can never hold an MQTT wildcard,
a slash, a colon or whitespace:

- a device logs in as `{tenant}.{device_id}` (both parts follow the wire contract's identifier
  rule, so there is no dot in either and no two devices share a username);
- an account (ingest, serve, a tenant's app, operator or clinician) as its name,
  `^[a-z][a-z0-9_-]{0,63}$` (no dot, so never a device's username).

Other parts of moclo keep their own tables in the same file (API tokens); each part versions
its own tables in `schema_versions`, so they never trip over each other's migrations.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from access.passwords import hash_password, new_secret
from access.store import StoreFile
from devices.catalogue import DEVICE_TYPES
from devices.rfc3339 import now_seconds
from devices.topics import ACCOUNT_NAME, ACCOUNT_NAME_RULE, IDENTIFIER_RULE, is_identifier

Role = Literal["ingest", "serve", "notify", "app", "operator", "clinician"]
ROLES: tuple[Role, ...] = get_args(Role)
# These belong to one tenant. An operator acknowledges its alerts and asks for commands of
# `operator` clearance; a clinician may do that and also act on medical devices (`clinician`
# clearance, devices/commands.py `admits`); an app only watches.
TENANT_ROLES: frozenset[str] = frozenset({"app", "operator", "clinician"})
# The tenant roles that may ask moclo to act on a device (their request topics, `~commands`).
ACTING_ROLES: frozenset[str] = frozenset({"operator", "clinician"})

COMPONENT = "registry"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    device_id TEXT NOT NULL,
    device_type TEXT NOT NULL,
    username TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE UNIQUE INDEX devices_active ON devices (tenant, device_id) WHERE revoked_at IS NULL;
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    tenant TEXT,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE UNIQUE INDEX accounts_active ON accounts (name) WHERE revoked_at IS NULL;
"""


class RegistryError(ValueError):
    """A registry change that cannot be made; the message says what and what to do."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """An MQTT login, returned once when issued and never stored in clear."""

    username: str
    password: str

    def __repr__(self) -> str:  # never print a secret by accident (logs, tracebacks)
        return f"Credentials(username={self.username!r}, password='***')"


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    tenant: str
    device_type: str
    device_id: str
    username: str
    created_at: str  # RFC 3339, UTC
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class AccountRecord:
    name: str
    role: Role
    tenant: str | None
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def username(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device to register: its tenant, type and id."""

    tenant: str
    device_type: str
    device_id: str


@dataclass(frozen=True, slots=True)
class MqttLogin:
    """An active login with what the broker's files need: the hash and who it is."""

    username: str
    password_hash: str
    role: Role | Literal["device"]
    tenant: str | None
    device_type: str | None = None
    device_id: str | None = None


def device_username(tenant: str, device_id: str) -> str:
    return f"{tenant}.{device_id}"


def check_device(tenant: str, device_type: str, device_id: str) -> None:
    """Raises RegistryError if this is not a device that could be registered."""
    if not is_identifier(tenant):
        raise RegistryError(f"tenant {tenant!r} must match {IDENTIFIER_RULE}")
    if not is_identifier(device_id):
        raise RegistryError(f"device id {device_id!r} must match {IDENTIFIER_RULE}")
    if device_type not in DEVICE_TYPES:
        raise RegistryError(
            f"unknown device type {device_type!r}; known: {', '.join(DEVICE_TYPES)}"
        )


def check_account(role: str, name: str, tenant: str | None) -> None:
    """Raises RegistryError if this is not an account that could be added."""
    if role not in ROLES:
        raise RegistryError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if ACCOUNT_NAME.fullmatch(name) is None:
        raise RegistryError(f"account name {name!r} must match {ACCOUNT_NAME_RULE}")
    article = "an" if role[0] in "aeiou" else "a"
    if role in TENANT_ROLES and tenant is None:
        raise RegistryError(f"{article} {role} account belongs to one tenant: give --tenant")
    if role not in TENANT_ROLES and tenant is not None:
        raise RegistryError(f"{article} {role} account serves every tenant: leave out --tenant")
    if tenant is not None and not is_identifier(tenant):
        raise RegistryError(f"tenant {tenant!r} must match {IDENTIFIER_RULE}")


class Registry:
    """The registry file. Each call opens its own connection, so one object may be shared by
    threads, and other processes may use the file at the same time."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._store = StoreFile(
            self.path,
            component=COMPONENT,
            schema=_SCHEMA,
            version=SCHEMA_VERSION,
            error=RegistryError,
        )

    # -- devices ---------------------------------------------------------------------------

    def add_device(self, tenant: str, device_type: str, device_id: str) -> Credentials:
        """Registers a device and returns its new credentials (the only time they are seen)."""
        [(_, credentials)] = self.add_devices([DeviceSpec(tenant, device_type, device_id)])
        return credentials

    def add_devices(
        self,
        specs: Sequence[DeviceSpec],
        *,
        skip_registered: bool = False,
        before_commit: Callable[[list[tuple[DeviceRecord, Credentials]]], None] | None = None,
    ) -> list[tuple[DeviceRecord, Credentials]]:
        """Registers all of `specs` or none: one transaction.

        `skip_registered` leaves devices that are already registered as they are (they get no
        new credentials and are not in the result) instead of refusing the whole lot.
        `before_commit` gets the issued credentials before the transaction commits (to write
        them somewhere safe); if it raises, nothing is registered.
        """
        seen: set[tuple[str, str]] = set()
        for spec in specs:
            check_device(spec.tenant, spec.device_type, spec.device_id)
            key = (spec.tenant, spec.device_id)
            if key in seen:
                raise RegistryError(f"device {spec.tenant}/{spec.device_id} appears twice")
            seen.add(key)
        now = _now()
        issued: list[tuple[DeviceRecord, Credentials]] = []
        with self._store.write() as db:
            for spec in specs:
                existing = db.execute(
                    "SELECT device_type, created_at FROM devices "
                    "WHERE tenant = ? AND device_id = ? AND revoked_at IS NULL",
                    (spec.tenant, spec.device_id),
                ).fetchone()
                if existing is not None:
                    if skip_registered:
                        continue
                    raise RegistryError(
                        f"device {spec.tenant}/{spec.device_id} is already registered (as "
                        f"{existing[0]}, since {existing[1]}); to issue new credentials, "
                        f"`moclo devices revoke {spec.tenant} {spec.device_id}` first"
                    )
                username = device_username(spec.tenant, spec.device_id)
                password = new_secret()
                db.execute(
                    "INSERT INTO devices (tenant, device_id, device_type, username, "
                    "password_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        spec.tenant,
                        spec.device_id,
                        spec.device_type,
                        username,
                        hash_password(password),
                        now,
                    ),
                )
                record = DeviceRecord(spec.tenant, spec.device_type, spec.device_id, username, now)
                issued.append((record, Credentials(username, password)))
            if before_commit is not None:
                before_commit(issued)
        return issued

    def revoke_device(self, tenant: str, device_id: str) -> None:
        """Takes a device's credentials back; its readings are refused from now on."""
        with self._store.write() as db:
            changed = db.execute(
                "UPDATE devices SET revoked_at = ? "
                "WHERE tenant = ? AND device_id = ? AND revoked_at IS NULL",
                (_now(), tenant, device_id),
            ).rowcount
        if not changed:
            raise RegistryError(
                f"no registered device {tenant}/{device_id} (never added, or already revoked); "
                f"`moclo devices list --tenant {tenant}` shows the registered ones"
            )

    def devices(
        self, *, tenant: str | None = None, include_revoked: bool = False
    ) -> list[DeviceRecord]:
        where, params = _filters(tenant=tenant, include_revoked=include_revoked)
        with self._store.read() as db:
            rows = db.execute(
                "SELECT tenant, device_type, device_id, username, created_at, revoked_at "
                f"FROM devices{where} ORDER BY tenant, device_id, id",
                params,
            ).fetchall()
        return [DeviceRecord(*row) for row in rows]

    def is_registered(self, tenant: str, device_type: str, device_id: str) -> bool:
        with self._store.read() as db:
            row = db.execute(
                "SELECT 1 FROM devices WHERE tenant = ? AND device_id = ? AND device_type = ? "
                "AND revoked_at IS NULL",
                (tenant, device_id, device_type),
            ).fetchone()
        return row is not None

    # -- accounts --------------------------------------------------------------------------

    def add_account(self, role: Role, name: str, *, tenant: str | None = None) -> Credentials:
        """Adds a service (ingest, serve) or tenant (app, operator, clinician) account;
        returns its new credentials, the only time they are seen."""
        check_account(role, name, tenant)
        password = new_secret()
        with self._store.write() as db:
            existing = db.execute(
                "SELECT role, tenant FROM accounts WHERE name = ? AND revoked_at IS NULL", (name,)
            ).fetchone()
            if existing is not None:
                held = existing[0] + (f" of {existing[1]}" if existing[1] else "")
                raise RegistryError(
                    f"account {name!r} already exists ({held}); to issue new credentials, "
                    f"`moclo accounts revoke {name}` first"
                )
            _check_name_comes_back_with_same_reads(db, role, name, tenant)
            db.execute(
                "INSERT INTO accounts (name, role, tenant, password_hash, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, role, tenant, hash_password(password), _now()),
            )
        return Credentials(name, password)

    def revoke_account(self, name: str) -> None:
        with self._store.write() as db:
            changed = db.execute(
                "UPDATE accounts SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (_now(), name),
            ).rowcount
        if not changed:
            raise RegistryError(
                f"no account {name!r} (never added, or already revoked); "
                "`moclo accounts list` shows them"
            )

    def accounts(self, *, include_revoked: bool = False) -> list[AccountRecord]:
        where, params = _filters(include_revoked=include_revoked)
        with self._store.read() as db:
            rows = db.execute(
                "SELECT name, role, tenant, created_at, revoked_at "
                f"FROM accounts{where} ORDER BY name, id",
                params,
            ).fetchall()
        return [AccountRecord(*row) for row in rows]

    # -- for the broker's files --------------------------------------------------------------

    def mqtt_logins(self) -> list[MqttLogin]:
        """Every active login with its password hash, accounts first, in a stable order."""
        with self._store.read() as db:
            accounts = db.execute(
                "SELECT name, password_hash, role, tenant FROM accounts "
                "WHERE revoked_at IS NULL ORDER BY name"
            ).fetchall()
            devices = db.execute(
                "SELECT username, password_hash, tenant, device_type, device_id FROM devices "
                "WHERE revoked_at IS NULL ORDER BY tenant, device_id"
            ).fetchall()
        return [MqttLogin(name, h, role, tenant) for name, h, role, tenant in accounts] + [
            MqttLogin(user, h, "device", tenant, device_type, device_id)
            for user, h, tenant, device_type, device_id in devices
        ]


def _reads(role: str, tenant: str | None) -> tuple[str, str | None]:
    """What a login of this role and tenant may read: a tenant's roles all read the same
    topics of their tenant (access/broker.py), a service account what its service reads."""
    return ("tenant" if role in TENANT_ROLES else role), tenant


def _check_name_comes_back_with_same_reads(
    db: sqlite3.Connection, role: str, name: str, tenant: str | None
) -> None:
    """A revoked account's name is issued again only with the same reads. On the distributed
    engine a persistent session outlives its login (24 h after its last connection), with the
    subscriptions it had, which RabbitMQ checked once, when they were made: whoever holds the
    name next resumes them (tests/test_engine_attacks.py). Mosquitto checks each delivery."""
    earlier = db.execute(
        "SELECT role, tenant FROM accounts WHERE name = ? AND revoked_at IS NOT NULL "
        "ORDER BY id DESC",
        (name,),
    ).fetchall()
    for old_role, old_tenant in earlier:
        if _reads(old_role, old_tenant) != _reads(role, tenant):
            again = f"to an account of {old_tenant}" if old_tenant else f"as {old_role}"
            raise RegistryError(
                f"account name {name!r} belonged to a {old_role}"
                f"{f' of {old_tenant}' if old_tenant else ''} until revoked; it is issued "
                f"again only {again}, because its persistent sessions on the broker keep what "
                "it subscribed to: choose another name"
            )


def _filters(
    *, tenant: str | None = None, include_revoked: bool = False
) -> tuple[str, tuple[str, ...]]:
    clauses, params = [], []
    if not include_revoked:
        clauses.append("revoked_at IS NULL")
    if tenant is not None:
        clauses.append("tenant = ?")
        params.append(tenant)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def _now() -> str:
    return now_seconds()
