"""Timeline rows for the dispatcher's steps, written to the outbox in the step's own transaction
(so a step and its record are kept together or not at all) until InfluxDB has them.

Each row names one alert (or notice): a message listing three cows is three rows per event,
so each cow's page shows who was told of it, when and how.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

from notify.model import Subject
from notify.outbox import Outbox
from storage.notifications import Event, NotificationEvent


class Timeline:
    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def subjects(
        self,
        db: sqlite3.Connection,
        event: Event,
        subjects: Iterable[Subject],
        now: float,
        *,
        person: str = "",
        channel: str = "",
        level: int = 0,
        message_id: str = "",
        detail: str = "",
    ) -> None:
        """One `event` row per subject."""
        rows = [
            NotificationEvent(
                tenant=s.tenant,
                event=event,
                alert_id=s.id,
                ts_ns=self._outbox.next_ts_ns(now),
                device_id=s.device_id,
                rule=s.rule,
                person=person,
                channel=channel,
                level=level,
                message_id=message_id,
                detail=detail,
            )
            for s in subjects
        ]
        self._outbox.add_events(db, rows)

    def delivery(
        self, db: sqlite3.Connection, delivery_id: str, now: float, event: Event, detail: str
    ) -> None:
        """One `event` row per subject of the message a delivery carries."""
        row = db.execute(
            "SELECT d.message_id, d.channel_shown, m.person, m.level, m.subject_keys "
            "FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE d.id = ?",
            (delivery_id,),
        ).fetchone()
        if row is None:
            return
        message_id, channel, person, level, keys = row
        self.subjects(
            db,
            event,
            load_subjects(db, json.loads(keys)),
            now,
            person=person,
            channel=channel,
            level=level,
            message_id=message_id,
            detail=detail,
        )


def load_subjects(db: sqlite3.Connection, keys: list[str]) -> list[Subject]:
    """The taken subjects of `keys`, in that order."""
    found: dict[str, Subject] = {}
    for start in range(0, len(keys), 500):  # below SQLite's limit on bound parameters
        chunk = keys[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for key, text in db.execute(
            f"SELECT key, subject FROM taken WHERE key IN ({marks})", chunk
        ):
            found[key] = Subject(**json.loads(text))
    return [found[k] for k in keys if k in found]
