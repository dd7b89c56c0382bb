"""The ingest benchmark's cow-only shapes: the seed's main device and the heaviest to judge (five
default rules, two of them baselines), which a mix of every type dilutes.

`cows` cow trackers report every 10 minutes for two days of reading time ending now (a random
episode about once a day per cow, one cow in ten offline for 3 h, as in the mix). The first day
is judged here, before any writer starts, by the alert engine with the default rules, and its
state saved as ingest's alert-state snapshot: each moclo ingest of the round starts from it, as a
deployed ingest restarts with its herd's baselines learnt. The second day is the backlog:

1. cows-single: its first `single` readings, one per message, in time order;
2. cows-batched: every full array of 50 consecutive readings of one cow (two a cow a day).
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict

from benchmarks.alerts_stack import DAY, TENANTS, BenchmarkFailed
from benchmarks.ingest_data import Message, Shape
from ingest.alerts import AlertEngine, snapshot
from ingest.decode import Decoded, Decoder, Limits
from simulators.clock import SimulatedClock
from simulators.fleet import Fleet, FleetSpec

INTERVAL_S = 600.0


def two_days(cows: int, *, seed: int, end: float | None = None) -> tuple[list[Message], int]:
    """Every reading of the herd, in time order, and the time (ns) where the second day starts."""
    start = (time.time() if end is None else end) - 2 * DAY
    spec = FleetSpec(TENANTS["cow_tracker"], "cow_tracker", cows, INTERVAL_S, incident_every_s=DAY)
    fleet = Fleet([spec], prefix="p", seed=seed, start=start)
    rng = random.Random(seed)
    for device in fleet.devices[::10]:
        device.add_episode("offline", start + rng.uniform(0, 2 * DAY - 3 * 3600), 3 * 3600)
    messages = [
        (device.topic.removeprefix("p/"), payload)
        for device, payload, _ in fleet.messages(
            SimulatedClock(start), threading.Event(), duration_s=2 * DAY
        )
    ]
    return messages, int((start + DAY) * 1e9)


def learnt_state(messages: list[Message], until_ns: int) -> tuple[bytes, int]:
    """The alert engine's snapshot after judging the readings before `until_ns` (default rules),
    and how many readings that was."""
    decoder = Decoder("p", limits=Limits(max_past_s=None))
    decoded = Decoded()
    now = time.time_ns()
    for topic, payload in messages:
        decoder.decode(f"p/{topic}", payload, now, decoded)
    if decoded.rejections:
        raise BenchmarkFailed(f"the herd's readings were rejected: {decoded.rejections[0]}")
    engine = AlertEngine()
    learnt = 0
    for item in decoded.readings:
        if item.reading.ts >= until_ns:
            break
        engine.evaluate(item)
        learnt += 1
    return snapshot.dump(engine), learnt


def cow_shapes(cows: int, single: int, *, seed: int, size: int = 50) -> list[Shape]:
    """The two cow shapes over the same herd, both starting from the state learnt on day one."""
    messages, second_day = two_days(cows, seed=seed)
    state, learnt = learnt_state(messages, second_day)
    later = messages[learnt:]
    if len(later) < single:
        raise BenchmarkFailed(f"{cows} cows made {len(later)} readings on day two, not {single}")
    pending: dict[str, list[bytes]] = defaultdict(list)
    arrays: list[Message] = []
    for topic, payload in later:  # time order, so a full array is sent when it fills
        waiting = pending[topic]
        waiting.append(payload)
        if len(waiting) == size:
            arrays.append((topic, b"[" + b",".join(waiting) + b"]"))
            waiting.clear()
    return [
        Shape("cows-single", later[:single], single, alert_state=state),
        Shape("cows-batched", arrays, len(arrays) * size, alert_state=state),
    ]
