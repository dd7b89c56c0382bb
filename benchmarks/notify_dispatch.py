"""The dispatcher in an alert storm: takes per second and messages produced after grouping.

`--alerts` raised alerts spread over `--seconds` of simulated time (a fake clock: the
dispatcher's own cost is measured, not waiting) on `--farms` farms of `--people` people in all,
two rules per farm, each farm's route telling all its people with a 10 s group wait. The
service's loop is played too: every simulated second `due()` is called and every delivery
reported sent. Each `take` is a durable SQLite commit (WAL, synchronous=FULL), so the baseline
in the same run is a bare durable commit of one row on the same disk: the ratio says what the
dispatcher adds to the price of durability.

    python -m benchmarks.notify_dispatch [--alerts 1000 --seconds 60 --people 50 --farms 5]
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from notify.dispatch import Dispatcher
from notify.model import Channel, EscalationStep, NotifyConfig, Person, Route, Subject, Target

GROUP_WAIT_S = 10.0
RULES = ("fever", "low_rumination")


@dataclass(frozen=True, slots=True)
class Storm:
    alerts: int
    people: int
    group_keys: int  # distinct (farm, rule): what grouping gathers by
    group_wait_s: float
    seconds: float
    take_s: float  # wall time spent in take()
    due_s: float  # wall time spent in due() and delivered()
    messages: int
    deliveries: int
    listed: int  # (alert, person) pairs the messages carry: every alert reaches everyone

    @property
    def message_bound(self) -> int:
        """Groups × people: each key opens at most one group per group wait (plus the one
        still open at the end), and each group is one message per person of its farm."""
        windows = math.ceil(self.seconds / self.group_wait_s) + 1
        return self.group_keys * windows * (self.people // (self.group_keys // len(RULES)))


def storm_config(people: int, farms: int) -> NotifyConfig:
    persons = [
        Person(
            name=f"p{n}",
            tenants=(f"farm-{n % farms}",),
            channels=(Channel(url=f"json://localhost:9/p{n}"),),
        )
        for n in range(people)
    ]
    routes = tuple(
        Route(
            name=f"farm-{f}",
            tenant=f"farm-{f}",
            steps=(EscalationStep(0, tuple(Target("person", p.name) for p in persons
                                           if p.tenants == (f"farm-{f}",))),),
            group_wait_s=GROUP_WAIT_S,
        )
        for f in range(farms)
    )  # fmt: skip
    return NotifyConfig(people={p.name: p for p in persons}, rotations={}, routes=routes)


def storm_alert(n: int, farms: int, at: float) -> Subject:
    return Subject(
        kind="alert", id=f"storm-{n}", state="raised", tenant=f"farm-{n % farms}",
        device_type="cow", device_id=f"cow-{n}", rule=RULES[(n // farms) % len(RULES)],
        severity="warning", message="39.9 °C", ts_ns=int(at * 1e9),
    )  # fmt: skip


def run_storm(
    path: Path, *, alerts: int = 1000, seconds: float = 60.0, people: int = 50, farms: int = 5
) -> Storm:
    """The storm against a new outbox at `path`, in simulated time."""
    now = [1_800_000_000.0]
    dispatcher = Dispatcher(storm_config(people, farms), path, clock=lambda: now[0])
    take_s = due_s = 0.0
    messages: set[str] = set()
    deliveries = listed = 0
    step = seconds / alerts
    end = now[0] + seconds + GROUP_WAIT_S + 1
    next_tick = now[0] + 1
    n = 0
    while now[0] <= end:
        if n < alerts:
            started = time.perf_counter()
            dispatcher.take(storm_alert(n, farms, now[0]))
            take_s += time.perf_counter() - started
            n += 1
        if now[0] >= next_tick or n >= alerts:  # the service's loop, once a simulated second
            next_tick += 1
            started = time.perf_counter()
            for delivery in dispatcher.due():
                dispatcher.delivered(delivery, ok=True)
                messages.add(delivery.message_id)
                deliveries += 1
                listed += len(delivery.subject_ids)
            due_s += time.perf_counter() - started
        now[0] += step if n < alerts else 1.0
    dispatcher.close()
    return Storm(
        alerts=alerts, people=people, group_keys=farms * len(RULES), group_wait_s=GROUP_WAIT_S,
        seconds=seconds, take_s=take_s, due_s=due_s, messages=len(messages),
        deliveries=deliveries, listed=listed,
    )  # fmt: skip


def durable_commit_s(path: Path, count: int) -> float:
    """The baseline: `count` one-row commits with the outbox's settings (WAL, FULL)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (key TEXT PRIMARY KEY, value TEXT)")
    started = time.perf_counter()
    for n in range(count):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (?, ?)", (f"alert:{n}:raised", "x" * 300))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--people", type=int, default=50)
    parser.add_argument("--farms", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        baseline = durable_commit_s(Path(tmp) / "baseline.sqlite", args.alerts)
        storm = run_storm(
            Path(tmp) / "outbox.sqlite", alerts=args.alerts, seconds=args.seconds,
            people=args.people, farms=args.farms,
        )  # fmt: skip
    print(f"{storm.alerts} alerts in {storm.seconds:g} s on {args.farms} farms, "
          f"{storm.people} people, group wait {storm.group_wait_s:g} s")  # fmt: skip
    print(f"take:          {storm.alerts / storm.take_s:8.0f} takes/s "
          f"({storm.take_s / storm.alerts * 1e3:.2f} ms each)")  # fmt: skip
    print(f"bare commit:   {args.alerts / baseline:8.0f} commits/s "
          f"(take costs {storm.take_s / baseline:.2f}× a bare durable commit)")  # fmt: skip
    print(f"due+delivered: {storm.due_s:8.2f} s in all for {storm.deliveries} deliveries")
    print(f"messages:      {storm.messages:8d} (bound groups × people: {storm.message_bound}; "
          f"without grouping: {storm.alerts * storm.people // args.farms})")  # fmt: skip
    print(f"alert×person:  {storm.listed:8d} listed (every alert to each of its farm's people)")


if __name__ == "__main__":
    main()
