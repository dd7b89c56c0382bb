"""The dispatcher's steps, each inside the caller's outbox transaction.

A raised alert (or a notice) joins the open group of its route and `group_by` values, which is
flushed `group_wait` after its first change: then step 1's people are told, one message each,
and the alerts' escalation clock starts at the flush (so everybody has a step's whole `after`
to acknowledge). Step k's people are told at flush + `after_k` if the alert is still open;
every alert of one flush escalates in one message. An `acknowledged` or `resolved` change stops
that, and (if the route says `resolved`) joins a group of its own that tells the people who
were told of the raise. A message to a person in quiet hours below their breakthrough is
held until the window ends; escalation does not wait for it.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from typing import cast

from notify.compose import Phase
from notify.model import Route, Subject
from notify.routing import matching_routes
from notify.telling import Teller
from notify.timeline import load_subjects
from storage.notifications import Event


def _group_key(route: Route, subject: Subject) -> str:
    return json.dumps([str(getattr(subject, name, "")) for name in route.group_by])


class Workflow(Teller):
    """When: taking changes into groups, and the flushes, escalations, repeats and releases
    whose time has come."""

    def _route(self, name: str) -> Route | None:
        return next((r for r in self.config.routes if r.name == name), None)

    def keys(self, text: str) -> list[str]:
        return cast(list[str], json.loads(text))

    # -- taking a change ---------------------------------------------------------------------

    def take(self, subjects: Sequence[Subject], now: float) -> None:
        """All of `subjects` in one transaction: a storm costs one commit (one fsync) per
        batch the feed hands over, not one per change."""
        with self._outbox.transaction() as db:
            for subject in subjects:
                self._take(db, subject, now)

    def _take(self, db: sqlite3.Connection, subject: Subject, now: float) -> None:
        fields = json.dumps(dataclasses.asdict(subject))
        inserted = db.execute(
            "INSERT OR IGNORE INTO taken (key, subject, taken_at) VALUES (?, ?, ?)",
            (subject.key, fields, now),
        ).rowcount
        if not inserted:
            return
        if subject.state in ("acknowledged", "resolved"):
            self._stop(db, subject, now)
            return
        if subject.kind == "alert" and self._ended(db, subject.id):
            return  # its end came first (a replay out of order): nothing to escalate
        for route in matching_routes(self.config, subject):
            phase: Phase = "raised" if subject.kind == "alert" else "notice"
            key = _group_key(route, subject)
            if subject.kind == "alert":
                db.execute(
                    "INSERT OR REPLACE INTO escalations (alert_id, route, group_key, "
                    "raise_key, state, raised_at, next_step) "
                    "VALUES (?, ?, ?, ?, 'open', ?, 0)",
                    (subject.id, route.name, key, subject.key, now),
                )
            self._gather(db, route, key, phase, 1, subject.key, now)

    def _ended(self, db: sqlite3.Connection, alert_id: str) -> bool:
        ends = (f"alert:{alert_id}:acknowledged", f"alert:{alert_id}:resolved")
        return db.execute("SELECT 1 FROM taken WHERE key IN (?, ?)", ends).fetchone() is not None

    def _gather(
        self, db: sqlite3.Connection, route: Route, key: str, phase: Phase, level: int,
        subject_key: str, now: float,
    ) -> None:  # fmt: skip
        """Into the open group of (route, key, phase, level), or a new one closing
        `group_wait` from now."""
        row = db.execute(
            "SELECT id FROM groups WHERE flushed = 0 AND route = ? AND group_key = ? "
            "AND phase = ? AND level = ?",
            (route.name, key, phase, level),
        ).fetchone()
        if row is None:
            group_id = db.execute(
                "INSERT INTO groups (route, group_key, phase, level, close_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (route.name, key, phase, level, now + route.group_wait_s),
            ).lastrowid
        else:
            group_id = row[0]
        db.execute("INSERT OR IGNORE INTO group_items VALUES (?, ?)", (group_id, subject_key))

    def _stop(self, db: sqlite3.Connection, subject: Subject, now: float) -> None:
        """An acknowledgement or resolution ends the alert's escalation and repeats."""
        rows = db.execute(
            "SELECT route, group_key, state, next_step FROM escalations WHERE alert_id = ?",
            (subject.id,),
        ).fetchall()
        for route_name, key, state, next_step in rows:
            if state == "resolved" or state == subject.state:
                continue
            db.execute(
                "UPDATE escalations SET state = ?, next_at = NULL, repeat_at = NULL "
                "WHERE alert_id = ? AND route = ?",
                (subject.state, subject.id, route_name),
            )
            detail = (
                f"acknowledged by {subject.acknowledged_by or 'someone'}: escalation stopped"
                if subject.state == "acknowledged"
                else "the alert was resolved: escalation stopped"
            )
            event: Event = "acknowledged" if subject.state == "acknowledged" else "resolved"
            self._timeline.subjects(db, event, [subject], now, level=next_step, detail=detail)
            route = self._route(route_name)
            told = db.execute(
                "SELECT 1 FROM told WHERE alert_id = ? AND route = ? AND status = 'told'",
                (subject.id, route_name),
            ).fetchone()
            if route is not None and route.resolved and told:
                self._gather(db, route, key, cast(Phase, subject.state), 0, subject.key, now)

    # -- the passing of time -----------------------------------------------------------------

    def advance(self, db: sqlite3.Connection, now: float) -> None:
        """Everything whose time has come by `now`, in the order it came due."""
        self._flush(db, now)
        # Each pass tells one step; after a long stop several may be overdue, each in turn.
        while self._escalate(db, now):
            pass
        self._repeat(db, now)
        self._release(db, now)

    def _flush(self, db: sqlite3.Connection, now: float) -> None:
        groups = db.execute(
            "SELECT id, route, phase, level, close_at FROM groups "
            "WHERE flushed = 0 AND close_at <= ? ORDER BY close_at",
            (now,),
        ).fetchall()
        for group_id, route_name, phase, level, close_at in groups:
            db.execute("UPDATE groups SET flushed = 1 WHERE id = ?", (group_id,))
            route = self._route(route_name)
            keys = [k for (k,) in db.execute(
                "SELECT subject_key FROM group_items WHERE group_id = ? ORDER BY rowid",
                (group_id,),
            )]  # fmt: skip
            subjects = load_subjects(db, keys)
            if route is None or not subjects:
                continue
            if phase == "raised":
                subjects = self._open(db, route.name, subjects)
                self._start_clock(db, route, subjects, close_at)
                self._tell(db, route, subjects, "raised", 1, route.steps[0].notify, close_at, now)
            elif phase == "notice":
                self._tell(db, route, subjects, "notice", 1, route.steps[0].notify, close_at, now)
            else:
                for person, theirs in self._told_people(db, route.name, subjects).items():
                    self._message(db, person, route, phase, level, theirs, now)

    def _start_clock(
        self, db: sqlite3.Connection, route: Route, subjects: list[Subject], base: float
    ) -> None:
        next_at = base + route.steps[1].after_s if len(route.steps) > 1 else None
        repeat_at = base + route.repeat_s if route.repeat_s else None
        db.executemany(
            "UPDATE escalations SET base_at = ?, next_step = 1, next_at = ?, repeat_at = ? "
            "WHERE alert_id = ? AND route = ?",
            [(base, next_at, repeat_at, s.id, route.name) for s in subjects],
        )

    def _escalate(self, db: sqlite3.Connection, now: float) -> bool:
        """The next step of every alert whose step is due; False if there was none."""
        rows = db.execute(
            "SELECT route, next_at, next_step, base_at, raise_key FROM escalations "
            "WHERE next_at <= ? AND state = 'open' ORDER BY next_at",
            (now,),
        ).fetchall()
        batches: dict[tuple[str, float, int, float], list[str]] = defaultdict(list)
        for route_name, next_at, step, base, key in rows:
            batches[(route_name, next_at, step, base)].append(key)
        for (route_name, next_at, step, base), keys in batches.items():
            route = self._route(route_name)
            subjects = load_subjects(db, keys)
            following = (
                base + route.steps[step + 1].after_s
                if route is not None and step + 1 < len(route.steps)
                else None
            )
            db.executemany(
                "UPDATE escalations SET next_step = ?, next_at = ? WHERE raise_key = ? "
                "AND route = ?",
                [(step + 1, following, key, route_name) for key in keys],
            )
            if route is None or step >= len(route.steps):
                continue  # the route or step left the notify file: nobody more to tell
            self._timeline.subjects(
                db, "escalated", subjects, now, level=step + 1,
                detail=f"not acknowledged {route.steps[step].after_s:g}s after the first "
                f"message: telling step {step + 1}",
            )  # fmt: skip
            self._tell(db, route, subjects, "escalated", step + 1, route.steps[step].notify,
                       next_at, now)  # fmt: skip
        return bool(rows)

    def _repeat(self, db: sqlite3.Connection, now: float) -> None:
        rows = db.execute(
            "SELECT route, repeat_at, raise_key FROM escalations "
            "WHERE repeat_at <= ? AND state = 'open' ORDER BY repeat_at",
            (now,),
        ).fetchall()
        batches: dict[tuple[str, float], list[str]] = defaultdict(list)
        for route_name, repeat_at, key in rows:
            batches[(route_name, repeat_at)].append(key)
        for (route_name, repeat_at), keys in batches.items():
            route = self._route(route_name)
            subjects = load_subjects(db, keys)
            every = route.repeat_s if route is not None else None
            # After a long stop, one reminder, not one per missed interval.
            following = repeat_at + every * ((now - repeat_at) // every + 1) if every else None
            db.executemany(
                "UPDATE escalations SET repeat_at = ? WHERE raise_key = ? AND route = ?",
                [(following, key, route_name) for key in keys],
            )
            if route is None or not every:
                continue
            self._timeline.subjects(
                db, "repeated", subjects, now, detail=f"still open after {every:g}s: telling again"
            )
            for person, theirs in self._told_people(db, route_name, subjects).items():
                self._message(db, person, route, "repeated", 0, theirs, now)

    def next_wake(self) -> float | None:
        with self._outbox.read() as db:
            row = db.execute(
                "SELECT min(t) FROM ("
                "SELECT min(close_at) AS t FROM groups WHERE flushed = 0 "
                "UNION ALL SELECT min(next_at) FROM escalations WHERE state = 'open' "
                "UNION ALL SELECT min(repeat_at) FROM escalations WHERE state = 'open' "
                "UNION ALL SELECT min(hold_until) FROM messages WHERE state = 'held' "
                "UNION ALL SELECT min(due_at) FROM deliveries WHERE state = 'pending')"
            ).fetchone()
        return None if row[0] is None else float(row[0])
