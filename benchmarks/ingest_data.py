"""The ingest benchmark's two message shapes, built from the alert benchmark's fleet
(`mixed_readings`: every device type, a fixed seed, two days of reading time).

1. single: one reading per message, `n` readings in time order.
2. batched: a JSON array of exactly `size` consecutive readings of one device per message,
   `n / size` messages, each published when its device's last reading in it was taken. A
   blood-pressure meter measures twice a day, so it never fills an array of 50 in two days:
   that type is absent from this shape (4 % of the single shape's readings).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import orjson

from benchmarks.alerts_stack import BenchmarkFailed
from benchmarks.alerts_throughput import mixed_readings

Message = tuple[str, bytes]  # (topic without its prefix, payload)


@dataclass(frozen=True, slots=True)
class Shape:
    name: str  # "single", "batched", "cows-single", "cows-batched"
    messages: list[Message]
    readings: int
    # Ingest's alert-state snapshot to start from (benchmarks/ingest_cows.py); b"": none.
    alert_state: bytes = b""

    @property
    def per_message(self) -> int:
        return self.readings // len(self.messages)


def single(n: int, *, seed: int, types: frozenset[str] | None = None) -> Shape:
    return Shape("single", mixed_readings(n, seed=seed, types=types), n)


def batched(n: int, *, seed: int, size: int = 50, types: frozenset[str] | None = None) -> Shape:
    if n % size:
        raise ValueError(f"{n} readings do not make whole arrays of {size}")
    # Full arrays only: draw more readings than needed, since each device's last one is short.
    readings = mixed_readings(n * 6 // 5 + 10 * size, seed=seed, types=types)
    pending: dict[str, list[bytes]] = defaultdict(list)
    messages: list[Message] = []
    for topic, payload in readings:  # time order, so a full array is sent when it fills
        waiting = pending[topic]
        waiting.append(payload)
        if len(waiting) == size:
            messages.append((topic, b"[" + b",".join(waiting) + b"]"))
            waiting.clear()
            if len(messages) * size == n:
                return Shape("batched", messages, n)
    raise BenchmarkFailed(f"the fleet filled {len(messages)} arrays of {size}, fewer than needed")


def readings_in(payload: bytes) -> int:
    document = orjson.loads(payload)
    return len(document) if isinstance(document, list) else 1
