"""The dispatcher: who is told what and when, kept in the outbox so a restart changes nothing.

No network and no sleeping: the service calls `take` for each change it receives (and
acknowledges the MQTT message when it returns: the change is then on disk), asks `due()` for
the deliveries whose time has come at `next_wake()`, hands each to its channel's worker and
reports back with `delivered`. Time comes from the injected clock only.

Guarantees (docs/notifications.md, "Delivery guarantees"):
- a change (`Subject.key`) is taken once, also across restarts;
- a person is told of an alert's raise at most once per route (by the first step naming
  them), of its end once, and reminded once per `repeat`; a delivery marked sent is never
  handed out again; the one exception is a delivery handed out and not
  confirmed before a crash, handed out again after the restart with the same `Delivery.id`;
- a failed attempt is retried with capped, jittered exponential back-off stored in the outbox;
  one channel's retries never delay another's deliveries.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notify.model import Channel, NotifyConfig, Subject
from notify.outbox import Outbox
from notify.timeline import Timeline
from notify.workflow import Workflow
from storage.notifications import NotificationEvent

RETRY_FIRST_S = 10.0  # the wait after a first failed attempt; doubled each attempt after
RETRY_CAP_S = 15 * 60.0  # never longer: a channel back from an outage is used within this
KEEP_S = 30 * 86400.0  # finished alerts, messages and taken changes are forgotten after this
PRUNE_EVERY_S = 3600.0


@dataclass(frozen=True)
class Delivery:
    """One message to one channel of one person."""

    id: str  # f"{message_id}/{channel_index}": the idempotency key receivers see
    message_id: str
    person: str
    channel: Channel
    title: str
    body: str  # lists every grouped subject; ends with the ack links when there are any
    tenant: str
    subject_ids: tuple[str, ...]
    level: int
    attempt: int  # 1 for the first


class Dispatcher:
    """The durable state machine between alert changes and deliveries (one per outbox file;
    its methods may be called from several threads)."""

    def __init__(
        self,
        config: NotifyConfig,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        ack_link: Callable[[str, str], str | None] = lambda alert_id, person: None,
        max_attempts: int = 8,
        retry_first_s: float = RETRY_FIRST_S,
        retry_cap_s: float = RETRY_CAP_S,
        rng: random.Random | None = None,
        keep_s: float = KEEP_S,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._clock = clock
        self._max_attempts = max_attempts
        self._retry_first_s = retry_first_s
        self._retry_cap_s = retry_cap_s
        self._rng = rng or random.Random()
        self._keep_s = keep_s
        self._next_prune = float("-inf")
        self._outbox = Outbox(path)
        self._timeline = Timeline(self._outbox)
        self._work = Workflow(config, self._outbox, self._timeline, ack_link)
        with self._outbox.transaction() as db:
            # Handed out before a crash and never confirmed: due again, with the same id.
            db.execute("UPDATE deliveries SET state = 'pending' WHERE state = 'claimed'")

    def take(self, subject: Subject) -> None:
        """Durable on return; a key taken before (also before a restart) is a no-op."""
        self._work.take((subject,), self._clock())

    def take_all(self, subjects: Sequence[Subject]) -> None:
        """`take` for several, in one commit: all of them durable on return, or none."""
        self._work.take(subjects, self._clock())

    def due(self) -> list[Delivery]:
        """Every delivery whose time has come, claimed: not handed out again until
        `delivered` says it failed, or the dispatcher is reopened without its confirmation."""
        now = self._clock()
        with self._outbox.transaction() as db:
            self._work.advance(db, now)
            if now >= self._next_prune:
                self._outbox.prune(db, now - self._keep_s)
                self._next_prune = now + PRUNE_EVERY_S
            rows = db.execute(
                "SELECT d.id, d.message_id, d.channel_index, d.attempt, m.person, m.title, "
                "m.body, m.tenant, m.subject_keys, m.level FROM deliveries d "
                "JOIN messages m ON m.id = d.message_id "
                "WHERE d.state = 'pending' AND d.due_at <= ? ORDER BY d.due_at",
                (now,),
            ).fetchall()
            out: list[Delivery] = []
            for row in rows:
                delivery = self._claim(db, row, now)
                if delivery is not None:
                    out.append(delivery)
        return out

    def _claim(self, db: sqlite3.Connection, row: tuple[Any, ...], now: float) -> Delivery | None:
        did, mid, index, attempt, name, title, body, tenant, keys, level = row
        person = self._work.config.people.get(name)
        if person is None or not 0 <= index < len(person.channels):
            self._finish(db, did, now, "failed", "the person or channel is no longer in the "
                         "notify file")  # fmt: skip
            return None
        if tenant not in person.tenants:  # a reload took the tenant from them
            self._finish(db, did, now, "failed", f"{name} no longer serves {tenant}")
            return None
        db.execute(
            "UPDATE deliveries SET state = 'claimed', attempt = attempt + 1 WHERE id = ?", (did,)
        )
        return Delivery(
            id=did,
            message_id=mid,
            person=person.name,
            channel=person.channels[index],
            title=title,
            body=body,
            tenant=tenant,
            subject_ids=tuple(_subject_id(k) for k in self._work.keys(keys)),
            level=level,
            attempt=attempt + 1,
        )

    def delivered(
        self, delivery: Delivery, *, ok: bool, detail: str = "", permanent: bool = False
    ) -> None:
        """What the channel said. Sent: never handed out again. Failed: retried after a
        back-off, unless `permanent` or the last attempt (then `failed`). A confirmation of
        a delivery not handed out (a duplicate, or one from before a restart) is ignored."""
        # A sender's error may quote the URL it was given, and the URL may hold a token.
        detail = detail.replace(delivery.channel.url, delivery.channel.shown)[:500]
        now = self._clock()
        with self._outbox.transaction() as db:
            row = db.execute(
                "SELECT state, attempt FROM deliveries WHERE id = ?", (delivery.id,)
            ).fetchone()
            if row is None or row[0] != "claimed":
                return
            attempt = int(row[1])
            if ok:
                self._finish(db, delivery.id, now, "sent", detail)
            elif permanent or attempt >= self._max_attempts:
                why = "refused for good" if permanent else f"{attempt} attempts failed"
                self._finish(db, delivery.id, now, "failed", f"{why}: {detail}")
            else:
                wait = self.backoff(attempt)
                db.execute(
                    "UPDATE deliveries SET state = 'pending', due_at = ?, detail = ? WHERE id = ?",
                    (now + wait, detail, delivery.id),
                )
                self._timeline.delivery(
                    db, delivery.id, now, "retrying",
                    f"{detail}; attempt {attempt + 1} of {self._max_attempts} in {wait:.0f}s",
                )  # fmt: skip

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt `attempt`: doubling from `retry_first_s`, capped,
        with full jitter in its upper half so channels that failed together do not retry
        together."""
        ceiling = min(self._retry_cap_s, self._retry_first_s * 2.0 ** min(attempt - 1, 30))
        return ceiling * self._rng.uniform(0.5, 1.0)

    def _finish(
        self, db: sqlite3.Connection, delivery_id: str, now: float, state: str, detail: str
    ) -> None:
        db.execute(
            "UPDATE deliveries SET state = ?, detail = ? WHERE id = ?", (state, detail, delivery_id)
        )
        self._timeline.delivery(db, delivery_id, now, "sent" if state == "sent" else "failed",
                                detail)  # fmt: skip

    def next_wake(self) -> float | None:
        """When `due()` will next have something (it may have something now: then a time in
        the past); None when nothing is owed."""
        return self._work.next_wake()

    def owed(self) -> dict[str, int]:
        """What the outbox still owes, for /metrics: deliveries waiting or handed out
        (`deliveries`), messages held for quiet hours (`held`), timeline events not yet in
        InfluxDB (`events`)."""
        with self._outbox.read() as db:
            (deliveries,) = db.execute(
                "SELECT count(*) FROM deliveries WHERE state IN ('pending', 'claimed')"
            ).fetchone()
            (held,) = db.execute("SELECT count(*) FROM messages WHERE state = 'held'").fetchone()
            (events,) = db.execute("SELECT count(*) FROM events").fetchone()
        return {"deliveries": int(deliveries), "held": int(held), "events": int(events)}

    def events(self, limit: int = 1000) -> list[NotificationEvent]:
        """Timeline events not yet stored in InfluxDB, oldest first."""
        return self._outbox.pending_events(limit)

    def events_stored(self, events: Sequence[NotificationEvent]) -> None:
        """These are in InfluxDB: forget them."""
        self._outbox.drop_events(events)

    def reload(self, config: NotifyConfig) -> None:
        """The notify file changed: groups not yet sent, steps not yet due and new changes
        follow it; messages already made stay. A delivery finds its channel by position in
        the person's list, so reordering a person's channels moves queued deliveries too."""
        self._work.config = config

    def close(self) -> None:
        self._outbox.close()


def _subject_id(key: str) -> str:
    """The id in a `Subject.key` (`kind:id:state`; an id may hold colons)."""
    return key.split(":", 1)[1].rsplit(":", 1)[0]
