"""Injected faults: counted by the simulator, reconciled with what ingest stored and rejected."""

from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest

from core.settings import Settings
from simulators.faults import REJECTED_AS, FaultInjector, FaultRates
from simulators.run import SimulationOptions, run_simulation
from tests.conftest import RunningIngest
from tests.helpers import Influx, cow_json, wait_until


def stream(rates: FaultRates, n: int = 400, seed: int = 1) -> tuple[list[bytes], Counter[str]]:
    counts: Counter[str] = Counter()
    injector = FaultInjector(rates, random.Random(seed), counts)
    sent: list[bytes] = []
    for i in range(n):
        sent += injector.apply(cow_json(1795327200 + i, i))
    return sent + injector.flush(), counts


def readings_in(messages: list[bytes]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for message in messages:
        try:
            document = orjson.loads(message)
        except orjson.JSONDecodeError:
            continue
        out += document if isinstance(document, list) else [document]
    return out


def test_no_rates_change_nothing() -> None:
    sent, counts = stream(FaultRates())
    assert [orjson.loads(m)["seq"] for m in sent] == list(range(400)) and not counts


@pytest.mark.parametrize("fault", ["duplicate", "out_of_order", "late", "silence"])
def test_faults_that_keep_the_data_lose_nothing(fault: str) -> None:
    sent, counts = stream(FaultRates(**{fault: 0.1}))
    seqs = [r["seq"] for r in readings_in(sent)]
    assert counts[fault] > 0
    assert sorted(set(seqs)) == list(range(400))  # every reading arrives
    if fault == "duplicate":
        assert len(seqs) == 400 + counts["duplicate"]
    if fault in ("out_of_order", "late"):
        assert seqs != sorted(seqs)
    if fault == "silence":
        assert any(m.startswith(b"[") for m in sent)  # the burst after the silence


def test_content_faults_spoil_exactly_what_they_count() -> None:
    rates = FaultRates(
        malformed_json=0.05, schema_violation=0.05, out_of_range=0.05, clock_skew=0.05
    )
    sent, counts = stream(rates)
    parsed = readings_in(sent)
    assert len(sent) - len(parsed) == counts["malformed_json"]
    assert sum(isinstance(r["body_temp_c"], str) for r in parsed) == counts["schema_violation"]
    assert sum(r["body_temp_c"] == 1e12 for r in parsed) == counts["out_of_range"]
    assert (
        sum(
            float(r["ts"]) - 1795327200 - float(r["seq"]) == 365 * 86_400  # type: ignore[arg-type]
            for r in parsed
        )
        == counts["clock_skew"]
    )


def test_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        FaultRates(duplicate=2)
    with pytest.raises(ValueError, match="unknown fault"):
        FaultRates.parse("gremlins=0.1")


def test_injected_faults_reconcile_with_what_ingest_did(
    settings: Settings, influx: Influx, ingest: RunningIngest
) -> None:
    rates = FaultRates(
        malformed_json=0.02,
        schema_violation=0.02,
        out_of_range=0.02,
        clock_skew=0.02,
        duplicate=0.03,
        out_of_order=0.03,
        late=0.03,
        silence=0.02,
    )
    result = run_simulation(
        settings.mqtt,
        settings.topic_prefix,
        SimulationOptions(
            devices={"cow_tracker": 10, "thermostat": 5, "pacemaker": 5},
            tenant="farm",
            interval_s=60,
            duration_s=3 * 3600,
            seed=9,
            burst=True,
            faults=rates,
        ),
    )
    assert result.acknowledged and set(result.faults) == {f for f in rates.__slots__}
    spoiled = sum(result.faults.get(fault, 0) for fault in REJECTED_AS)
    expected_rejections = Counter()
    for fault, reason in REJECTED_AS.items():
        expected_rejections[reason] += result.faults.get(fault, 0)

    def stored() -> int:
        return sum(influx.count(m, "seq") for m in ("cow_tracker", "thermostat", "pacemaker"))

    wait_until(lambda: stored() == result.produced - spoiled, what="every unspoiled reading")
    rows = influx.query('SELECT count("error") FROM "moclo_rejected" GROUP BY "reason"')
    assert {row["reason"]: row["count"] for row in rows} == dict(expected_rejections)
