"""The notifier's outbox: everything it owes, in one SQLite file, so a crash loses nothing.

What is kept (schema version `SCHEMA_VERSION`, in `PRAGMA user_version`):

    taken        every Subject.key taken, with the subject: a change seen twice is taken once
    groups       changes gathered for one message per person (route, group_by values, phase,
                 escalation level), flushed `group_wait` after the first
    group_items  which changes a group holds
    escalations  per (alert, route): the next escalation step and repeat, and whether the
                 alert is still open
    told         who was told (or is held in quiet hours) of which alert on which route
    messages     one message to one person: its text, and whether it is held, queued or dropped
    deliveries   one message to one channel: when it is due, its attempts, sent or failed
    events       timeline rows not yet written to InfluxDB, keyed by their (unique) time

The file is created 0600 (a message may name patients and cows; channel URLs are never
stored, only the channel's index in the notify file and its shown form), kept in WAL mode with
`synchronous=FULL`, so a commit has reached the disk when `take` returns: the MQTT message it
came in may then be acknowledged.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from storage.notifications import EVENTS, NotificationEvent

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE taken (key TEXT PRIMARY KEY, subject TEXT NOT NULL, taken_at REAL NOT NULL);
CREATE TABLE groups (
    id INTEGER PRIMARY KEY, route TEXT NOT NULL, group_key TEXT NOT NULL, phase TEXT NOT NULL,
    level INTEGER NOT NULL, close_at REAL NOT NULL, flushed INTEGER NOT NULL DEFAULT 0);
CREATE INDEX groups_open ON groups (route, group_key, phase, level) WHERE flushed = 0;
CREATE INDEX groups_due ON groups (close_at) WHERE flushed = 0;
CREATE TABLE group_items (
    group_id INTEGER NOT NULL, subject_key TEXT NOT NULL, PRIMARY KEY (group_id, subject_key));
CREATE TABLE escalations (
    alert_id TEXT NOT NULL, route TEXT NOT NULL, group_key TEXT NOT NULL,
    raise_key TEXT NOT NULL, state TEXT NOT NULL, base_at REAL, next_step INTEGER NOT NULL,
    next_at REAL, repeat_at REAL, PRIMARY KEY (alert_id, route));
CREATE INDEX escalations_next ON escalations (next_at) WHERE next_at IS NOT NULL;
CREATE INDEX escalations_repeat ON escalations (repeat_at) WHERE repeat_at IS NOT NULL;
CREATE TABLE told (
    alert_id TEXT NOT NULL, route TEXT NOT NULL, person TEXT NOT NULL, level INTEGER NOT NULL,
    status TEXT NOT NULL, PRIMARY KEY (alert_id, route, person));
CREATE TABLE messages (
    id TEXT PRIMARY KEY, person TEXT NOT NULL, route TEXT NOT NULL, phase TEXT NOT NULL,
    level INTEGER NOT NULL, tenant TEXT NOT NULL, subject_keys TEXT NOT NULL,
    state TEXT NOT NULL, hold_until REAL, created_at REAL NOT NULL,
    title TEXT NOT NULL DEFAULT '', body TEXT NOT NULL DEFAULT '');
CREATE INDEX messages_held ON messages (hold_until) WHERE state = 'held';
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY, message_id TEXT NOT NULL, channel_index INTEGER NOT NULL,
    channel_shown TEXT NOT NULL, state TEXT NOT NULL, due_at REAL NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0, detail TEXT NOT NULL DEFAULT '');
CREATE INDEX deliveries_due ON deliveries (due_at) WHERE state = 'pending';
CREATE TABLE events (ts_ns INTEGER PRIMARY KEY, event TEXT NOT NULL);
"""


class OutboxError(RuntimeError):
    """The outbox file cannot be used; the message says which file and what to do."""


class Outbox:
    """One connection to the outbox file, shared by the caller's threads under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._last_ts_ns = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Created 0600 before SQLite opens it: its -wal and -shm files copy the mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self._migrate()
            row = self.db.execute("SELECT max(ts_ns) FROM events").fetchone()
            self._last_ts_ns = int(row[0] or 0)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(
                f"cannot open the notification outbox {path}: {exc}; check that its directory "
                "is writable and the file is not another program's"
            ) from None

    def _migrate(self) -> None:
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise OutboxError(
                f"{self.path} has outbox schema version {version}, newer than this moclo's "
                f"{SCHEMA_VERSION}: run the newer moclo, or move the file away to start empty"
            )
        with self.transaction() as db:
            # Statement by statement: executescript would commit in the middle of this one.
            for statement in _statements():
                db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything in it is on disk when the block ends, or nothing."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reading only, while no other thread uses it."""
        with self._lock:
            yield self.db

    def next_ts_ns(self, now: float) -> int:
        """The time of an event: now, but strictly after the last one, so no two events are
        one InfluxDB point (and an event's time is its key in `events`)."""
        self._last_ts_ns = max(int(now * 1e9), self._last_ts_ns + 1)
        return self._last_ts_ns

    def add_events(self, db: sqlite3.Connection, events: Sequence[NotificationEvent]) -> None:
        db.executemany(
            "INSERT INTO events (ts_ns, event) VALUES (?, ?)",
            [(e.ts_ns, json.dumps(_event_fields(e))) for e in events],
        )

    def pending_events(self, limit: int) -> list[NotificationEvent]:
        with self._lock:
            rows = self.db.execute(
                "SELECT event FROM events ORDER BY ts_ns LIMIT ?", (limit,)
            ).fetchall()
        return [_event_from(json.loads(text)) for (text,) in rows]

    def drop_events(self, events: Sequence[NotificationEvent]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM events WHERE ts_ns = ?", [(e.ts_ns,) for e in events])

    def close(self) -> None:
        with self._lock:
            self.db.close()


def _statements() -> list[str]:
    return [s.strip() for s in _SCHEMA.split(";") if s.strip()]


def _event_fields(event: NotificationEvent) -> dict[str, object]:
    return {name: getattr(event, name) for name in NotificationEvent.__slots__}


def _event_from(fields: dict[str, object]) -> NotificationEvent:
    event = str(fields["event"])
    assert event in EVENTS, f"an outbox event of unknown kind {event!r}"
    return NotificationEvent(**fields)  # type: ignore[arg-type]
