"""Telling people: turning changes into messages, one per person, in the caller's transaction.

Who (the targets' people at the step's time, less those already told or held for the alert on
this route), whether now (quiet hours below the person's breakthrough hold a message until they
end; an alert closed meanwhile drops it, saying why), the words (`compose.py`) and one delivery
per channel of the person, due at once. The timeline gets `held`, `queued` or the reason a held
message was dropped.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import cast
from zoneinfo import ZoneInfo

from notify.compose import Phase, body, highest, title
from notify.model import NotifyConfig, Person, Route, Subject, Target
from notify.outbox import Outbox
from notify.quiet import quiet_until
from notify.routing import recipients
from notify.timeline import Timeline, load_subjects
from storage.notifications import Event

_ALERT_PHASES = ("raised", "escalated", "repeated")  # tell of an open alert; dropped if not


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Teller:
    def __init__(
        self,
        config: NotifyConfig,
        outbox: Outbox,
        timeline: Timeline,
        ack_link: Callable[[str, str], str | None],
    ) -> None:
        self.config = config
        self._outbox = outbox
        self._timeline = timeline
        self._ack_link = ack_link

    def _open(self, db: sqlite3.Connection, route: str, subjects: list[Subject]) -> list[Subject]:
        """The subjects whose alert is still open (neither acknowledged nor resolved)."""
        return [
            s
            for s in subjects
            if db.execute(
                "SELECT 1 FROM escalations WHERE alert_id = ? AND route = ? AND state = 'open'",
                (s.id, route),
            ).fetchone()
        ]

    def _tell(
        self, db: sqlite3.Connection, route: Route, subjects: list[Subject], phase: Phase,
        level: int, targets: Sequence[Target], at: float, now: float,
    ) -> None:  # fmt: skip
        """One message to each of `targets` (resolved at `at`) listing the subjects they have
        not been told of (nor are held for) on this route."""
        people = recipients(self.config, targets, utc(at), tenant=route.tenant)
        if not people:  # e.g. a reloaded file lost the rotation this step names
            self._timeline.subjects(
                db, "failed", subjects, now, level=level,
                detail=f"route {route.name} step {level} names nobody who serves "
                f"{route.tenant} now: nobody was told; fix the notify file",
            )  # fmt: skip
            return
        for person in people:
            new = [
                s
                for s in subjects
                if s.kind != "alert"
                or not db.execute(
                    "SELECT 1 FROM told WHERE alert_id = ? AND route = ? AND person = ?",
                    (s.id, route.name, person.name),
                ).fetchone()
            ]
            if new:
                self._message(db, person, route, phase, level, new, now)

    def _told_people(
        self, db: sqlite3.Connection, route: str, subjects: list[Subject]
    ) -> dict[Person, list[Subject]]:
        """Who was told of each subject's alert on this route (not those only held), and of
        which of them."""
        out: dict[Person, list[Subject]] = defaultdict(list)
        for s in subjects:
            for (name,) in db.execute(
                "SELECT person FROM told WHERE alert_id = ? AND route = ? AND status = 'told' "
                "ORDER BY rowid",
                (s.id, route),
            ):
                person = self.config.people.get(name)
                # Told before a reload that took the tenant from them: told nothing more.
                if person is not None and s.tenant in person.tenants:
                    out[person].append(s)
        return out

    def _message(
        self, db: sqlite3.Connection, person: Person, route: Route, phase: Phase, level: int,
        subjects: list[Subject], now: float,
    ) -> None:  # fmt: skip
        hold = quiet_until(person, highest(subjects), utc(now))
        if hold is not None and phase == "repeated" and self._holds(db, person.name, route.name):
            return  # a reminder held for this person already tells them when the window ends
        message_id = uuid.uuid4().hex
        db.execute(
            "INSERT INTO messages (id, person, route, phase, level, tenant, subject_keys, "
            "state, hold_until, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'held', ?, ?)",
            (message_id, person.name, route.name, phase, level, subjects[0].tenant,
             json.dumps([s.key for s in subjects]), hold.timestamp() if hold else now, now),
        )  # fmt: skip
        if phase in ("raised", "escalated"):
            db.executemany(
                "INSERT OR IGNORE INTO told VALUES (?, ?, ?, ?, ?)",
                [(s.id, route.name, person.name, level, "held" if hold else "told")
                 for s in subjects if s.kind == "alert"],
            )  # fmt: skip
        if hold is None:
            self._queue(db, message_id, person, phase, level, subjects, now)
            return
        until = hold.astimezone(ZoneInfo(person.time_zone))
        self._timeline.subjects(
            db, "held", subjects, now, person=person.name, level=level, message_id=message_id,
            detail=f"in quiet hours until {until:%Y-%m-%d %H:%M %Z}; sent then if still open",
        )  # fmt: skip

    def _holds(self, db: sqlite3.Connection, person: str, route: str) -> bool:
        return (
            db.execute(
                "SELECT 1 FROM messages WHERE state = 'held' AND person = ? AND route = ? "
                "AND phase = 'repeated'",
                (person, route),
            ).fetchone()
            is not None
        )

    def _queue(
        self, db: sqlite3.Connection, message_id: str, person: Person, phase: Phase, level: int,
        subjects: list[Subject], now: float,
    ) -> None:  # fmt: skip
        """The message's words, and one delivery per channel, due now."""
        db.execute(
            "UPDATE messages SET state = 'queued', subject_keys = ?, title = ?, body = ? "
            "WHERE id = ?",
            (json.dumps([s.key for s in subjects]), title(phase, subjects),
             body(phase, level, subjects, person, self._ack_link), message_id),
        )  # fmt: skip
        db.executemany(
            "INSERT INTO deliveries (id, message_id, channel_index, channel_shown, state, "
            "due_at) VALUES (?, ?, ?, ?, 'pending', ?)",
            [(f"{message_id}/{i}", message_id, i, c.shown, now)
             for i, c in enumerate(person.channels)],
        )  # fmt: skip
        shown = ", ".join(c.shown for c in person.channels)
        self._timeline.subjects(
            db, "queued", subjects, now, person=person.name, level=level, message_id=message_id,
            detail=f"{phase} message to {shown or 'no channel: nothing can be sent'}",
        )  # fmt: skip

    def _release(self, db: sqlite3.Connection, now: float) -> None:
        """Held messages whose quiet hours have ended: sent if their alerts are still open."""
        rows = db.execute(
            "SELECT id, person, route, phase, level, subject_keys FROM messages "
            "WHERE state = 'held' AND hold_until <= ? ORDER BY hold_until",
            (now,),
        ).fetchall()
        for message_id, name, route_name, phase, level, keys in rows:
            subjects = load_subjects(db, json.loads(keys))
            person = self.config.people.get(name)
            still = self._open(db, route_name, subjects) if phase in _ALERT_PHASES else subjects
            serves = person is not None and all(s.tenant in person.tenants for s in subjects)
            if person is None or not serves or not still:
                db.execute("UPDATE messages SET state = 'dropped' WHERE id = ?", (message_id,))
                self._dropped(db, name, message_id, route_name, subjects, now)
                continue
            db.executemany(
                "UPDATE told SET status = 'told' WHERE alert_id = ? AND route = ? AND person = ?",
                [(s.id, route_name, name) for s in still],
            )
            self._queue(db, message_id, person, cast(Phase, phase), level, still, now)

    def _dropped(
        self, db: sqlite3.Connection, person: str, message_id: str, route: str,
        subjects: list[Subject], now: float,
    ) -> None:  # fmt: skip
        """The timeline says why a held message was not sent, alert by alert."""
        for s in subjects:
            row = db.execute(
                "SELECT state FROM escalations WHERE alert_id = ? AND route = ?", (s.id, route)
            ).fetchone()
            state = row[0] if row else "resolved"
            event: Event = "acknowledged" if state == "acknowledged" else "resolved"
            detail = f"held in quiet hours and not sent: {state} before they ended"
            if person not in self.config.people:
                event, detail = "failed", "held and not sent: the person left the notify file"
            elif s.tenant not in self.config.people[person].tenants:
                event, detail = "failed", f"held and not sent: {person} no longer serves {s.tenant}"
            self._timeline.subjects(
                db, event, [s], now, person=person, message_id=message_id, detail=detail
            )
