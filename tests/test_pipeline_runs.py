"""The pipeline formats the tags of a message's readings, and asks the cardinality guard about
its device, once per run of readings from one device: the lines, counts and rejections must be
what judging reading by reading gives, whichever devices the guard admits or refuses."""

from __future__ import annotations

import time

import orjson
import pytest

from devices.catalogue import DEVICE_TYPES
from ingest.alerts import AlertEngine
from ingest.alerts.rulebook import RuleBook
from ingest.cardinality import CardinalityGuard
from ingest.decode import Decoded, Decoder, RejectReason
from ingest.pipeline import Pipeline
from ingest.rejections import RejectionLog
from ingest.source import Message
from storage.lineprotocol import is_reading_line, reading_line

S = 1_000_000_000


def _array(device_type: str, start_s: int, n: int) -> bytes:
    example = DEVICE_TYPES[device_type].example
    return orjson.dumps([{**example, "ts": start_s + i, "seq": i} for i in range(n)])


def _messages(now: int) -> list[Message]:
    """Arrays from four cows of one tenant and a thermostat of another; cow-1 twice, with
    another device's message between (a new run with the same address object)."""
    start = now // S - 600
    sent = [
        ("farm", "cow_tracker", "cow-1", 3),
        ("farm", "cow_tracker", "cow-2", 2),
        ("home", "thermostat", "th-1", 1),
        ("farm", "cow_tracker", "cow-1", 2),
        ("farm", "cow_tracker", "cow-3", 4),
        ("farm", "cow_tracker", "cow-4", 2),
    ]
    return [
        Message(f"p/{t}/{kind}/{d}/telemetry", _array(kind, start + 10 * i, n), i, 1, now, 1)
        for i, (t, kind, d, n) in enumerate(sent)
    ]


@pytest.mark.parametrize("burst", [0, 1, 2, 3, 10], ids=lambda b: f"burst-{b}")
def test_runs_store_and_refuse_exactly_as_reading_by_reading(burst: int) -> None:
    now = time.time_ns()
    messages = _messages(now)
    pipeline = Pipeline(
        Decoder("p"),
        AlertEngine(RuleBook.empty()),
        RejectionLog(),
        CardinalityGuard(burst=burst, per_minute=0),
    )
    batch = pipeline.prepare(messages)

    # The same readings judged one by one by a guard of their own.
    decoder, decoded = Decoder("p"), Decoded()
    for m in messages:
        decoder.decode(m.topic, m.payload, m.received_ns, decoded)
    guard = CardinalityGuard(burst=burst, per_minute=0)
    admitted = [r for r in decoded.readings if guard.admit(r.address, now)]
    refused = len(decoded.readings) - len(admitted)

    assert len(decoded.readings) == 14  # the control: every reading decoded
    assert batch.readings == len(admitted)
    stored = [line for line in batch.lines if is_reading_line(line)]
    assert stored == [reading_line(r) for r in admitted]
    assert [r.reason for r in batch.rejections] == [RejectReason.CARDINALITY_LIMIT] * refused
    # Each tenant has its own bucket: with burst 1, farm keeps cow-1 (5 readings) and home
    # keeps th-1 (1); cow-2, cow-3 and cow-4 are refused, each reading on its own.
    if burst == 1:
        assert (batch.readings, refused) == (6, 8)
    if burst == 0:
        assert batch.readings == 0 and refused == 14
