"""Properties of the dispatcher over random histories of changes, time and channel answers:
a restart between any two steps changes nothing, and nobody is told of a change twice."""

from __future__ import annotations

import random
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from notify.dispatch import Delivery, Dispatcher
from notify.model import SubjectState
from tests.notify_fixtures import QUIET_NIGHTS, FakeClock, alert, config, person, route, who

CONFIG = config(
    [person("farmer", quiet=QUIET_NIGHTS), person("vet", channels=2), person("neighbour")],
    [route("fever", "farm-7", (0, who("farmer", "vet")), (300, who("neighbour", "vet")))],
)

# A change or a wait, then (as the service's loop does) whatever is due is handed to the
# channels, which answer: 0 fail, 1 fail for good, else accept.
Step = tuple[str, int, int]
steps = st.lists(
    st.tuples(
        st.sampled_from(["raised", "acknowledged", "resolved", "wait", "wait", "wait"]),
        st.integers(0, 3),
        st.sampled_from([0, 1, 2, 2, 2, 2]),
    ),
    max_size=40,
)
WAITS = (5, 10, 301, 6 * 3600)  # within a group, a group's wait, an escalation, a night


class NoJitter(random.Random):
    """The longest wait every time, so a run and its restarted twin retry at the same times."""

    def uniform(self, a: float, b: float) -> float:
        return b


def play(history: list[Step], outbox: Path, *, restart: bool) -> list[tuple[object, ...]]:
    """What the channels were handed, in order, and what they answered."""
    clock = FakeClock()
    handed: list[tuple[object, ...]] = []

    def start() -> Dispatcher:
        return Dispatcher(CONFIG, outbox, clock=clock, rng=NoJitter(), max_attempts=3)

    d = start()
    for what, n, answer in history:
        if what == "wait":
            clock.advance(WAITS[n])
        else:
            state: SubjectState = what  # type: ignore[assignment]
            d.take(alert(f"a{n}", state, by="vet" if state == "acknowledged" else ""))
        out: list[Delivery] = sorted(d.due(), key=lambda x: (x.person, x.title, x.id[-1]))
        for x in out:
            ok, permanent = answer >= 2, answer == 1
            d.delivered(x, ok=ok, permanent=permanent, detail="503")
            handed.append((x.person, x.title, x.subject_ids, x.level, x.id[-2:], ok))
        if restart:
            d.close()
            d = start()
    d.close()
    return handed


@settings(max_examples=60, deadline=None)
@given(steps)
def test_a_restart_between_any_two_steps_changes_nothing(history: list[Step]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        straight = play(history, Path(tmp) / "a.sqlite", restart=False)
        restarted = play(history, Path(tmp) / "b.sqlite", restart=True)
    assert restarted == straight


@settings(max_examples=60, deadline=None)
@given(steps)
def test_nobody_is_told_of_a_change_twice(history: list[Step]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        handed = play(history, Path(tmp) / "outbox.sqlite", restart=False)
    told: Counter[tuple[object, ...]] = Counter()
    for person_name, title, alert_ids, _level, channel, ok in handed:
        if ok:
            kind = str(title).split("] ")[1].split(":")[0]  # Resolved / Acknowledged / …
            kind = kind if kind in ("Resolved", "Acknowledged") else "raised"
            for alert_id in alert_ids:  # type: ignore[attr-defined]
                told[(person_name, channel, alert_id, kind)] += 1
    assert all(count == 1 for count in told.values()), told
