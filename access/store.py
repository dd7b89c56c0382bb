"""The registry file itself: one SQLite file shared by the device registry and the API tokens,
each keeping its own tables under its own schema version (table `schema_versions`).

The file is created 0600 before SQLite opens it (it holds password hashes and token digests,
and SQLite gives its -wal and -shm files the database file's permissions) and kept in WAL mode,
so readers (ingest, serve) never wait for a writer. Every call opens its own connection, so
one object may be shared by threads, and other processes may use the file at the same time.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager, suppress
from pathlib import Path


class StoreFile:
    """One component's tables in the registry file; errors are made by `error(message)`.

    `schema` creates the tables of `version` in a new file; `migrations[n]` takes a file at
    version n to n + 1 (statements separated by `;`), each step in the same transaction as
    its version's record, so a file is at one version or the next, never between."""

    def __init__(
        self,
        path: Path,
        *,
        component: str,
        schema: str,
        version: int,
        error: Callable[[str], Exception],
        timeout_s: float = 30.0,
        migrations: Mapping[int, str] | None = None,
    ) -> None:
        self.path = path
        self._component = component
        self._schema = schema
        self._version = version
        self._error = error
        self._timeout_s = timeout_s
        self._migrations = dict(migrations or {})
        missing = [n for n in range(1, version) if n not in self._migrations]
        assert not missing, f"{component}: no migration from schema version {missing}"
        self._ready = False

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with closing(self.connect()) as db:
            try:
                yield db
            except sqlite3.Error as exc:
                raise self._failed(exc) from None

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, taken before reading, so concurrent writers queue, not fail."""
        with closing(self.connect()) as db:
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._failed(exc) from None

    def connect(self, *, timeout_s: float | None = None) -> sqlite3.Connection:
        """A connection to the file, created and migrated on first use."""
        try:
            if not self._ready:
                self._create_file()
            db = sqlite3.connect(
                self.path,
                timeout=self._timeout_s if timeout_s is None else timeout_s,
                isolation_level=None,
            )
        except (OSError, sqlite3.Error) as exc:
            raise self._error(
                f"cannot open the registry {self.path}: {exc}; check the path (MOCLO_REGISTRY) "
                "and its permissions"
            ) from None
        if not self._ready:
            try:
                self._migrate(db)
            except BaseException:
                db.close()
                raise
            self._ready = True
        return db

    def _failed(self, exc: sqlite3.Error) -> Exception:
        return self._error(
            f"the registry {self.path} cannot be used ({exc}); if another command holds it, "
            "try again; check its permissions and free disk space"
        )

    def _create_file(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with suppress(FileExistsError):
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))

    def _migrate(self, db: sqlite3.Connection) -> None:
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS schema_versions "
                    "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
                )
                row = db.execute(
                    "SELECT version FROM schema_versions WHERE component = ?",
                    (self._component,),
                ).fetchone()
                if row is None:
                    _run_script(db, self._schema)
                    db.execute(
                        "INSERT INTO schema_versions (component, version) VALUES (?, ?)",
                        (self._component, self._version),
                    )
                elif row[0] > self._version:
                    raise self._error(
                        f"the registry {self.path} was written by a newer moclo ({self._component} "
                        f"schema {row[0]}; this one knows {self._version}): upgrade moclo"
                    )
                else:
                    for step in range(row[0], self._version):
                        _run_script(db, self._migrations[step])
                    db.execute(
                        "UPDATE schema_versions SET version = ? WHERE component = ?",
                        (self._version, self._component),
                    )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            # WAL mode is set outside a transaction.
            db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise self._failed(exc) from None


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Runs `;`-separated statements inside the caller's transaction (`executescript` would
    commit it first)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)
