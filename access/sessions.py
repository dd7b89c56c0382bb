"""The dashboard's sessions: what its cookie stands for, instead of the API token itself.

Signing in with a token makes a session: a random id (`secrets.token_urlsafe(32)`, 256 bits)
that goes into the cookie, and a row keyed by the id's SHA-256 (the id itself is stored
nowhere, so a copy of the registry file signs nobody in) with the token it was made from.

A session ends when the dashboard signs out (the row is deleted), when it has not been used
for `idle_s` (12 h: a screen left overnight signs in again), at `absolute_s` after sign-in
(7 days, whatever its use: a stolen cookie is not good forever), or when its token is revoked
(checked by the caller against the active tokens on every request, so `moclo tokens revoke` in
another process ends it within a second).

The table `dashboard_sessions` lives in the registry's SQLite file beside the API tokens, so a
session survives a restart of `moclo serve` and is shared by several `moclo serve` processes.
Each check is one indexed read; the last use is written at most every `TOUCH_EVERY_S`, so the
idle limit is exact to within that. An open live stream is checked every 2 s and so counts as
use: a dashboard left open on a wall screen stays signed in until the absolute limit.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from access.store import StoreFile
from access.tokens import TokenStoreError

IDLE_S = 12 * 3600
ABSOLUTE_S = 7 * 86_400
TOUCH_EVERY_S = 60.0
_MAX_PRESENTED = 100  # an id is 43 characters; anything much longer is not one

log = logging.getLogger("moclo.sessions")

COMPONENT = "dashboard_sessions"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE dashboard_sessions (
    id_sha256 TEXT PRIMARY KEY,
    token_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_used_at REAL NOT NULL
);
CREATE INDEX dashboard_sessions_token ON dashboard_sessions (token_id);
"""


@dataclass(frozen=True, slots=True)
class Session:
    """A live session: the token it was made from, and when it ends at the latest."""

    token_id: str
    expires_at: float  # epoch seconds: the earlier of the idle and the absolute limit


class Sessions:
    """The sessions in the registry file; `clock` is wall time in epoch seconds (the limits
    must hold across restarts, which a monotonic clock does not)."""

    def __init__(
        self,
        path: Path | str,
        *,
        idle_s: float = IDLE_S,
        absolute_s: float = ABSOLUTE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.idle_s = idle_s
        self.absolute_s = absolute_s
        self._clock = clock
        self._store = StoreFile(
            Path(path),
            component=COMPONENT,
            schema=_SCHEMA,
            version=SCHEMA_VERSION,
            error=TokenStoreError,
            timeout_s=10.0,
        )

    def create(self, token_id: str) -> str:
        """A new session for an authenticated token; returns its id (for the cookie only)."""
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        with self._store.write() as db:
            # Ended sessions are deleted here rather than by a timer: sign-ins are rare.
            db.execute(
                "DELETE FROM dashboard_sessions WHERE created_at <= ? OR last_used_at <= ?",
                (now - self.absolute_s, now - self.idle_s),
            )
            db.execute(
                "INSERT INTO dashboard_sessions (id_sha256, token_id, created_at, last_used_at) "
                "VALUES (?, ?, ?, ?)",
                (_digest(session_id), token_id, now, now),
            )
        return session_id

    def check(self, presented: str) -> Session | None:
        """The live session `presented` is the id of, or None (unknown, ended or expired).
        Counts as a use. Never logs or raises with `presented` in it."""
        if not presented or len(presented) > _MAX_PRESENTED:
            return None
        digest = _digest(presented)
        now = self._clock()
        with self._store.read() as db:
            row = db.execute(
                "SELECT token_id, created_at, last_used_at FROM dashboard_sessions "
                "WHERE id_sha256 = ?",
                (digest,),
            ).fetchone()
        if row is None:
            return None
        token_id, created_at, last_used_at = str(row[0]), float(row[1]), float(row[2])
        if now >= created_at + self.absolute_s or now >= last_used_at + self.idle_s:
            return None
        if now - last_used_at >= TOUCH_EVERY_S and self._touch(digest, now):
            last_used_at = now
        return Session(token_id, min(created_at + self.absolute_s, last_used_at + self.idle_s))

    def _touch(self, digest: str, now: float) -> bool:
        """Records a use; best effort with a short wait, so a registry held by a long write
        (`moclo devices import`) delays no request: a missed touch is retried on the next."""
        try:
            with closing(self._store.connect(timeout_s=0.5)) as db:
                db.execute(
                    "UPDATE dashboard_sessions SET last_used_at = ? WHERE id_sha256 = ?",
                    (now, digest),
                )
        except (sqlite3.Error, TokenStoreError) as exc:
            log.debug("could not record the use of a dashboard session: %s", exc)
            return False
        return True

    def end(self, presented: str) -> None:
        """Signs out: the session is gone for every process at once (nothing if unknown)."""
        if not presented or len(presented) > _MAX_PRESENTED:
            return
        with self._store.write() as db:
            db.execute("DELETE FROM dashboard_sessions WHERE id_sha256 = ?", (_digest(presented),))


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()
