"""Rejections are logged once per reason and counted; the backoff is capped and jittered."""

from __future__ import annotations

import logging
import random

import pytest

from ingest.decode import Rejection, RejectReason
from ingest.rejections import RejectionLog
from ingest.sink import Backoff


def rejection(reason: RejectReason) -> Rejection:
    return Rejection(
        reason,
        "farm",
        "cow_tracker",
        "moclo/farm/cow_tracker/c/telemetry",
        f"{reason.value} error",
        b"x",
        1,
    )


def test_the_first_of_each_reason_is_logged_and_the_rest_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = RejectionLog()
    with caplog.at_level(logging.WARNING, logger="moclo.ingest.rejected"):
        for _ in range(5):
            log.record(rejection(RejectReason.BAD_JSON))
        log.record(rejection(RejectReason.INVALID_READING))
    assert [r.getMessage().split(" on ")[0] for r in caplog.records] == [
        "rejected (bad_json)",
        "rejected (invalid_reading)",
    ]
    assert log.summary() == "rejected so far: bad_json=5, invalid_reading=1"
    assert log.summary() is None  # nothing new since
    log.record(rejection(RejectReason.BAD_JSON))
    assert log.summary() == "rejected so far: bad_json=6, invalid_reading=1"


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    backoff, rng = Backoff(first_s=0.2, cap_s=30.0), random.Random(1)
    for attempt in range(12):
        ceiling = min(30.0, 0.2 * 2**attempt)
        delays = [backoff.delay(attempt, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
