"""Fault injection: devices that misbehave the way real ones do, each fault at its own rate.

Every injected fault is counted, so a test (or a person) can reconcile what the simulator did
with what ingest recorded:

| fault | what the device sends | what ingest does with it |
|---|---|---|
| `malformed_json` | a payload cut short | rejects it: `bad_json` |
| `schema_violation` | a number sent as a string | rejects it: `invalid_reading` |
| `out_of_range` | a value beyond the field's bounds | rejects it: `invalid_reading` |
| `clock_skew` | a timestamp a year in the future | rejects it: `ts_out_of_window` |
| `duplicate` | the same reading twice | stores it once |
| `out_of_order` | a reading held back and sent after the next one | stores both |
| `late` | a reading held back for 5 to 20 turns | stores it |
| `silence` | nothing for 3 to 10 turns, then the backlog as one array (a burst) | stores them all |

Rates are probabilities per reading. Faults use their own random generator per device, so
turning them on does not change the readings themselves.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, fields

import orjson

REJECTED_AS = {
    "malformed_json": "bad_json",
    "schema_violation": "invalid_reading",
    "out_of_range": "invalid_reading",
    "clock_skew": "ts_out_of_window",
}


@dataclass(frozen=True, slots=True)
class FaultRates:
    malformed_json: float = 0.0
    schema_violation: float = 0.0
    out_of_range: float = 0.0
    clock_skew: float = 0.0
    duplicate: float = 0.0
    out_of_order: float = 0.0
    late: float = 0.0
    silence: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            if not 0.0 <= getattr(self, f.name) <= 1.0:
                raise ValueError(f"fault rate {f.name} must be between 0 and 1")

    def any(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    @classmethod
    def parse(cls, text: str) -> FaultRates:
        """`malformed_json=0.01,duplicate=0.02` → FaultRates."""
        names = {f.name for f in fields(cls)}
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, rate = part.partition("=")
            if name not in names:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(names))}")
            try:
                values[name] = float(rate)
            except ValueError:
                raise ValueError(f"{part!r}: write FAULT=RATE, e.g. duplicate=0.01") from None
        return cls(**values)


class FaultInjector:
    """Turns one device's stream of readings into what the misbehaving device sends."""

    def __init__(self, rates: FaultRates, rng: random.Random, counts: Counter[str]) -> None:
        self._rates = rates
        self._rng = rng
        self.counts = counts  # shared by the fleet: faults injected, by name
        self._held: list[tuple[int, bytes]] = []  # (turns left, reading) for late/out-of-order
        self._silent_turns = 0
        self._backlog: list[bytes] = []

    def apply(self, reading: bytes) -> list[bytes]:
        """The messages the device sends this turn; a list element may be a JSON array."""
        rates, rng = self._rates, self._rng
        out: list[bytes] = []
        # Readings held back earlier come out when their turn comes, after this turn's.
        due = [r for turns, r in self._held if turns <= 1]
        self._held = [(turns - 1, r) for turns, r in self._held if turns > 1]

        if self._silent_turns:
            self._silent_turns -= 1
            self._backlog.append(reading)
            if self._silent_turns == 0:
                out.append(b"[" + b",".join(self._backlog) + b"]")  # back: the burst
                self._backlog = []
            return out + due
        if rng.random() < rates.silence:
            self.counts["silence"] += 1
            self._silent_turns = rng.randint(3, 10)
            self._backlog = [reading]
            return due
        if rng.random() < rates.out_of_order:
            self.counts["out_of_order"] += 1
            self._held.append((1, reading))
            return due
        if rng.random() < rates.late:
            self.counts["late"] += 1
            self._held.append((rng.randint(5, 20), reading))
            return due
        reading, spoiled = self._spoil(reading)
        out.append(reading)
        if spoiled is None and rng.random() < rates.duplicate:
            self.counts["duplicate"] += 1
            out.append(reading)
        return out + due

    def _spoil(self, reading: bytes) -> tuple[bytes, str | None]:
        """At most one content fault per reading; which one, if any, is returned."""
        rates, rng = self._rates, self._rng
        for name, rate in (
            ("malformed_json", rates.malformed_json),
            ("schema_violation", rates.schema_violation),
            ("out_of_range", rates.out_of_range),
            ("clock_skew", rates.clock_skew),
        ):
            if rng.random() < rate:
                self.counts[name] += 1
                return _SPOILERS[name](reading), name
        return reading, None

    def flush(self) -> list[bytes]:
        """What is still held back when the run ends: sent now, so nothing is lost."""
        out = [r for _, r in self._held]
        if self._backlog:
            out.append(b"[" + b",".join(self._backlog) + b"]")
        self._held, self._backlog, self._silent_turns = [], [], 0
        return out


def _malformed(reading: bytes) -> bytes:
    return reading[: len(reading) // 2]


def _first_number_field(document: dict[str, object]) -> str:
    return next(
        k
        for k, v in document.items()
        if k not in ("ts", "seq") and isinstance(v, (int, float)) and not isinstance(v, bool)
    )


def _schema_violation(reading: bytes) -> bytes:
    document = orjson.loads(reading)
    name = _first_number_field(document)
    document[name] = str(document[name])
    return orjson.dumps(document)


def _out_of_range(reading: bytes) -> bytes:
    document = orjson.loads(reading)
    document[_first_number_field(document)] = 1e12
    return orjson.dumps(document)


def _clock_skew(reading: bytes) -> bytes:
    document = orjson.loads(reading)
    # A year ahead: beyond ingest's window however long the run, and never the timestamp of
    # a genuine reading of the same run.
    document["ts"] = float(document["ts"]) + 365 * 86_400
    return orjson.dumps(document)


_SPOILERS = {
    "malformed_json": _malformed,
    "schema_violation": _schema_violation,
    "out_of_range": _out_of_range,
    "clock_skew": _clock_skew,
}
