"""API tokens for people and apps: which tenants they see through the HTTP API and the dashboard,
whether they may acknowledge alerts, and which commands they may send to devices.

A token reads `moclo_<id>_<secret>`: `id` is 12 hex digits, shown by `moclo tokens list` and
used to revoke; `secret` is `secrets.token_urlsafe(32)` (256 random bits, 43 characters). Only
the id and the SHA-256 of the secret are stored. With 256 random bits there is nothing to guess,
so a slow password hash would only add latency to every request; the digests are compared with
`hmac.compare_digest`. A lost token cannot be shown again: revoke it and create another.

Roles: `viewer` reads its tenants; `operator` also acknowledges their alerts and sends their
devices the commands and desired states of `operator` clearance (devices/commands.py `admits`);
`clinician` may do what an operator may, and also act on medical devices (a pacemaker: its
read-out, its lower rate); `admin` reads and acknowledges in its tenants, or in every tenant
(`tenants` None, also those that appear later), and manages, but acts on no device: a
compromised admin token must not reach a patient's pacemaker.

The table `api_tokens` lives in the registry's SQLite file (`MOCLO_REGISTRY`), beside the device
registry's tables; it is versioned as `api_tokens` in `schema_versions`. The file is created
0600, in WAL mode, so `moclo tokens` can create and revoke while `moclo serve` reads.

`authenticate` answers from a snapshot of the active tokens, read again at most every
`refresh_s` (1 s): a request costs one hash and no disk read, and a revocation takes effect in
about a second, without a restart. A token id not in the snapshot is looked up once, so a new
token works at once. Revoking keeps the row, as a record of who had access.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import hmac
import json
import logging
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast, get_args

from access.store import StoreFile
from access.token_schema import COMPONENT, MIGRATIONS, SCHEMA, SCHEMA_VERSION
from devices.rfc3339 import now_seconds
from devices.topics import IDENTIFIER_RULE, is_identifier

Role = Literal["viewer", "operator", "clinician", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
NAME_RULE = "a letter or digit, then up to 63 letters, digits and . _ @ + -"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_ID = re.compile(r"[0-9a-f]{12}")
_TOKEN = re.compile(r"moclo_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_MAX_PRESENTED = 200  # anything longer is not a token; not worth a regular expression
TOUCH_EVERY_S = 60.0  # last use is written at most this often per token

log = logging.getLogger("moclo.tokens")


class TokenError(ValueError):
    """A token that cannot be made or revoked as asked; the message says what to do instead."""


class UnknownToken(TokenError):
    """No active token has that id or name."""


class TokenStoreError(OSError):
    """The registry file cannot be read or written; the message says what to check."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a valid token's identity and what it may see and do."""

    token_id: str
    name: str
    role: Role
    tenants: frozenset[str] | None  # None: every tenant

    def sees(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants

    @property
    def may_acknowledge(self) -> bool:
        return self.role in ("operator", "clinician", "admin")

    def scope_words(self) -> str:
        """`tenant farm`, `tenants clinic, farm` or `every tenant`."""
        if self.tenants is None:
            return "every tenant"
        return f"tenant{'s' if len(self.tenants) > 1 else ''} {', '.join(sorted(self.tenants))}"

    def to_json(self) -> dict[str, object]:
        return {
            "token_id": self.token_id,
            "name": self.name,
            "role": self.role,
            "tenants": None if self.tenants is None else sorted(self.tenants),
        }


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A stored token without its secret: what `moclo tokens list` shows."""

    token_id: str
    name: str
    role: Role
    tenants: frozenset[str] | None
    created_at: str  # RFC 3339, UTC
    last_used_at: str | None = None
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def principal(self) -> Principal:
        return Principal(self.token_id, self.name, self.role, self.tenants)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.token_id,
            "name": self.name,
            "role": self.role,
            "tenants": None if self.tenants is None else sorted(self.tenants),
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True, slots=True)
class _Active:
    digest: bytes
    principal: Principal


def check_token_spec(name: str, tenants: Iterable[str] | None, role: str) -> None:
    """TokenError unless `name`, `tenants` (None: every tenant) and `role` make a token."""
    if _NAME.fullmatch(name) is None:
        raise TokenError(f"a token's name is {NAME_RULE}; got {name!r}")
    if _ID.fullmatch(name) is not None:
        raise TokenError("a token's name cannot look like a token id (12 hex digits)")
    if role not in ROLES:
        raise TokenError(f"a role is one of {', '.join(ROLES)}; got {role!r}")
    if tenants is None:
        if role != "admin":
            raise TokenError("only an admin's token may be for every tenant: name its tenants")
        return
    chosen = list(tenants)
    if not chosen:
        raise TokenError("a token needs at least one tenant (or, for an admin, every tenant)")
    for tenant in chosen:
        if not is_identifier(tenant):
            raise TokenError(f"tenant {tenant!r} is not valid: a tenant matches {IDENTIFIER_RULE}")


class Tokens:
    """The API tokens in the registry file. Each call opens its own connection, so one object
    may be shared by threads (FastAPI runs the check on its thread pool)."""

    def __init__(
        self,
        path: Path | str,
        *,
        refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self._refresh_s = refresh_s
        self._clock = clock
        self._store = StoreFile(
            self.path,
            component=COMPONENT,
            schema=SCHEMA,
            version=SCHEMA_VERSION,
            error=TokenStoreError,
            timeout_s=10.0,
            migrations=MIGRATIONS,
        )
        self._lock = threading.Lock()
        self._active: dict[str, _Active] = {}
        self._loaded_at: float | None = None
        self._touched: dict[str, float] = {}

    # -- changes (the CLI) -----------------------------------------------------------------

    def create(
        self, name: str, tenants: Iterable[str] | None, role: Role
    ) -> tuple[TokenRecord, str]:
        """A new token; returns its record and the token itself, which is never shown again."""
        chosen = None if tenants is None else frozenset(tenants)
        check_token_spec(name, chosen, role)
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        record = TokenRecord(token_id, name, role, chosen, created_at=_now())
        with self._store.write() as db:
            taken = db.execute(
                "SELECT id FROM api_tokens WHERE name = ? AND revoked_at IS NULL", (name,)
            ).fetchone()
            if taken is not None:
                raise TokenError(
                    f"an active token is named {name!r} already (id {taken[0]}): choose another "
                    f"name, or revoke it first with `moclo tokens revoke {taken[0]}`"
                )
            db.execute(
                "INSERT INTO api_tokens (id, name, secret_sha256, role, tenants, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    token_id,
                    name,
                    _digest(secret).hex(),
                    role,
                    _tenants_text(chosen),
                    record.created_at,
                ),
            )
        self._forget()
        return record, f"moclo_{token_id}_{secret}"

    def revoke(self, id_or_name: str) -> TokenRecord:
        """Revokes the active token with this id (or, failing that, this name)."""
        with self._store.write() as db:
            row = (
                db.execute(
                    f"SELECT {_COLUMNS} FROM api_tokens WHERE revoked_at IS NULL AND id = ?",
                    (id_or_name,),
                ).fetchone()
                or db.execute(
                    f"SELECT {_COLUMNS} FROM api_tokens WHERE revoked_at IS NULL AND name = ?",
                    (id_or_name,),
                ).fetchone()
            )
            if row is None:
                raise UnknownToken(
                    f"no active token has the id or name {id_or_name!r}: "
                    "`moclo tokens list` shows them"
                )
            revoked_at = _now()
            db.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ?", (revoked_at, row[0]))
        self._forget()
        return dataclasses.replace(_record(row), revoked_at=revoked_at)

    def list(self, *, include_revoked: bool = False) -> builtins.list[TokenRecord]:
        """The tokens, oldest first; the revoked ones too with `include_revoked`."""
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        with self._store.read() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM api_tokens{where} ORDER BY created_at, rowid"
            ).fetchall()
        return [_record(row) for row in rows]

    # -- checks (moclo serve) --------------------------------------------------------------

    def authenticate(self, presented: str) -> Principal | None:
        """Who `presented` (a whole token) is, or None if it is malformed, unknown or revoked.

        Never logs or raises with `presented` in it; TokenStoreError if the file cannot be read.
        """
        if len(presented) > _MAX_PRESENTED:
            return None
        match = _TOKEN.fullmatch(presented)
        if match is None:
            return None
        entry = self._snapshot().get(match[1]) or self._newly_created(match[1])
        # Hashed even for an unknown id, so the answer takes as long either way.
        digest = _digest(match[2])
        if entry is None or not hmac.compare_digest(entry.digest, digest):
            return None
        self._touch(entry.principal.token_id)
        return entry.principal

    def is_active(self, token_id: str) -> bool:
        """Whether the token is still active (as of at most `refresh_s` ago)."""
        return token_id in self._snapshot()

    def active_principal(self, token_id: str) -> Principal | None:
        """Who the active token `token_id` is, or None if it was revoked (as of at most
        `refresh_s` ago): how a dashboard session, made from a token, is checked."""
        entry = self._snapshot().get(token_id) or self._newly_created(token_id)
        return None if entry is None else entry.principal

    def count_active(self) -> int:
        return len(self._snapshot())

    def _snapshot(self) -> dict[str, _Active]:
        with self._lock:
            now = self._clock()
            if self._loaded_at is None or now - self._loaded_at >= self._refresh_s:
                with self._store.read() as db:
                    rows = db.execute(
                        f"SELECT {_COLUMNS}, secret_sha256 FROM api_tokens WHERE revoked_at IS NULL"
                    ).fetchall()
                self._active = {
                    row[0]: _Active(bytes.fromhex(row[-1]), _record(row[:-1]).principal)
                    for row in rows
                }
                self._loaded_at = now
            return self._active

    def _newly_created(self, token_id: str) -> _Active | None:
        """A token created since the snapshot was read (one indexed read), so that a new token
        works at once; a revocation still waits for the next snapshot."""
        with self._store.read() as db:
            row = db.execute(
                f"SELECT {_COLUMNS}, secret_sha256 FROM api_tokens "
                "WHERE id = ? AND revoked_at IS NULL",
                (token_id,),
            ).fetchone()
        if row is None:
            return None
        entry = _Active(bytes.fromhex(row[-1]), _record(row[:-1]).principal)
        with self._lock:
            self._active = {**self._active, token_id: entry}
        return entry

    def _forget(self) -> None:
        with self._lock:
            self._loaded_at = None

    def _touch(self, token_id: str) -> None:
        """Records the last use, at most every TOUCH_EVERY_S: it is for people deciding what to
        revoke, and not worth a write per request."""
        now = self._clock()
        with self._lock:
            if now - self._touched.get(token_id, -TOUCH_EVERY_S) < TOUCH_EVERY_S:
                return
            self._touched[token_id] = now
        try:
            with closing(self._store.connect(timeout_s=0.5)) as db:
                db.execute(
                    "UPDATE api_tokens SET last_used_at = ? WHERE id = ?", (_now(), token_id)
                )
        except (sqlite3.Error, TokenStoreError) as exc:
            # The answer does not depend on it; the next use after a minute tries again.
            log.debug("could not record the last use of token %s: %s", token_id, exc)


_COLUMNS = "id, name, role, tenants, created_at, last_used_at, revoked_at"


def _record(row: tuple[object, ...]) -> TokenRecord:
    token_id, name, role, tenants, created_at, last_used_at, revoked_at = row
    return TokenRecord(
        token_id=str(token_id),
        name=str(name),
        role=cast(Role, role),
        tenants=None if tenants is None else frozenset(json.loads(str(tenants))),
        created_at=str(created_at),
        last_used_at=None if last_used_at is None else str(last_used_at),
        revoked_at=None if revoked_at is None else str(revoked_at),
    )


def _tenants_text(tenants: frozenset[str] | None) -> str | None:
    return None if tenants is None else json.dumps(sorted(tenants))


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _now() -> str:
    return now_seconds()
