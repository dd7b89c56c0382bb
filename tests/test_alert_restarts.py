"""Restarts at any point of a messy stream: the engine neither forgets nor repeats an alert.

A seeded stream of five devices over four days (fevers, heats, a meter going back, a room
going quiet, a pasture fence, late and repeated readings, gaps, acknowledgements, sweeps) is
judged once without interruption. Then, for many cut points:
- a clean restart (snapshot at the cut, stored changes applied) must give exactly the same
  changes as the uninterrupted run;
- a crash (snapshot some batches before the cut, every change up to the cut stored) must
  restore exactly the alerts that were open, and never raise one of them a second time.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest

from devices.place_rules import GeofenceRule
from devices.topics import DeviceAddress
from ingest.alerts import AlertEngine, snapshot
from ingest.alerts.rulebook import Override, RuleBook
from storage.alert_record import Alert, StoredChange, parse_alert_line
from tests.test_alerts import T0, S, Wall, reading

PASTURE = GeofenceRule(
    name="left_pasture",
    where="outside",
    polygon=((52.089, 5.119), (52.089, 5.124), (52.093, 5.124), (52.093, 5.119)),
    margin_m=20,
    severity="warning",
    message="{distance_m:.0f} m outside",
)
BOOK = RuleBook([Override("cow_tracker", PASTURE, "left_pasture")])
EVERY = {"cow_tracker": 600, "smart_meter": 300, "thermostat": 120, "blood_pressure": 43_200}
Batch = tuple[list[Any], bool]  # readings, and whether someone acknowledges after it


def stream(seed: int) -> list[Batch]:
    rnd = random.Random(seed)
    devices = [
        DeviceAddress("farm", "cow_tracker", "c1"),
        DeviceAddress("farm2", "cow_tracker", "c1"),  # the same id in another tenant
        DeviceAddress("home", "smart_meter", "m1"),
        DeviceAddress("home", "thermostat", "t1"),
        DeviceAddress("clinic", "blood_pressure", "bp1"),
    ]
    events: list[tuple[int, Any]] = []
    for a in devices:
        t = T0 + rnd.randint(0, 600)
        kwh, temp, body = 100.0, 20.0, 38.6
        while t < T0 + 4 * 86_400:
            gap = EVERY[a.device_type] * (rnd.randint(3, 20) if rnd.random() < 0.03 else 1)
            t += int(gap * rnd.uniform(0.5, 1.5))
            if a.device_type == "cow_tracker":
                if rnd.random() < 0.05:
                    body = rnd.choice([38.6, 39.8, 38.0])
                fields: dict[str, Any] = {
                    "body_temp_c": body + rnd.uniform(-0.1, 0.1),
                    "activity": rnd.randint(0, 900),
                    "lat": 52.091 + rnd.choice([0, 0, 0.0025]),
                    "lon": 5.121,
                }
            elif a.device_type == "smart_meter":
                kwh = max(0.0, kwh + rnd.uniform(0, 0.1) - (5 if rnd.random() < 0.02 else 0))
                fields = {"energy_kwh": kwh, "voltage_v": rnd.choice([230] * 20 + [200, 260])}
            elif a.device_type == "thermostat":
                temp += rnd.uniform(-0.3, 0.3)
                fields = {"temp_c": temp, "heating": rnd.random() < 0.7}
            else:
                fields = {"systolic_mmhg": rnd.choice([120] * 8 + [185]), "diastolic_mmhg": 80}
            events.append((t, reading(a, t, **fields)))
            if rnd.random() < 0.03:  # a late or repeated reading
                events.append((t + 1, reading(a, t - rnd.randint(0, 3000), **fields)))
    events.sort(key=lambda e: e[0])
    batches: list[Batch] = []
    i = 0
    while i < len(events):
        n = rnd.randint(1, 8)
        batches.append(([e for e in events[i : i + n]], rnd.random() < 0.3))
        i += n
    return batches


def run(engine: AlertEngine, wall: Wall, batches: list[Batch]) -> list[Alert]:
    """Judges batches as ingest does: readings, an occasional ack, then a sweep."""
    got: list[Alert] = []
    for events, acknowledge in batches:
        for t, item in events:
            wall.ns = max(wall.ns, t * S)
            got += engine.evaluate(item)
        raised = sorted(a.alert_id for a in engine.open_list() if a.state == "raised")
        if acknowledge and raised:
            tenant = next(a.tenant for a in engine.open_list() if a.alert_id == raised[0])
            got.append(engine.acknowledge(tenant, raised[0], "vet"))
        wall.ns += 30 * S
        got += engine.sweep()
    return got


def stored(changes: list[Alert]) -> list[StoredChange]:
    out = [parse_alert_line(a.to_line()) for a in changes]
    return [c for c in out if c is not None]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_clean_restart_anywhere_changes_nothing(seed: int) -> None:
    batches = stream(seed)
    expected = run(AlertEngine(BOOK, wall_ns=(wall := Wall(T0))), wall, batches)
    assert {a.rule for a in expected} >= {"fever", "counter_backwards", "silent", "left_pasture"}
    assert {a.state for a in expected} == {"raised", "acknowledged", "resolved"}
    for cut in range(0, len(batches), max(1, len(batches) // 25)):
        wall = Wall(T0)
        first = AlertEngine(BOOK, wall_ns=wall)
        got = run(first, wall, batches[:cut])
        second = AlertEngine(BOOK, wall_ns=wall)
        snapshot.load(second, snapshot.dump(first))
        got += second.apply_stored(stored(got))
        got += run(second, wall, batches[cut:])
        assert got == expected, f"seed {seed}, restart after batch {cut}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_crash_anywhere_neither_forgets_nor_repeats(seed: int) -> None:
    batches = stream(seed)
    for snap_at in range(0, len(batches), 97):
        for crash_at in (snap_at + 5, snap_at + 40):
            wall = Wall(T0)
            engine = AlertEngine(BOOK, wall_ns=wall)
            got = run(engine, wall, batches[:snap_at])
            old_snapshot = snapshot.dump(engine)
            got += run(engine, wall, batches[snap_at:crash_at])
            open_at_crash = {a.alert_id for a in engine.open_list()}

            restarted = AlertEngine(BOOK, wall_ns=wall)
            snapshot.load(restarted, old_snapshot)
            after = restarted.apply_stored(stored(got))
            assert {a.alert_id for a in restarted.open_list()} == open_at_crash
            after += run(restarted, wall, batches[crash_at:])
            raised_before = {a.alert_id for a in got if a.state == "raised"}
            assert not [a for a in after if a.state == "raised" and a.alert_id in raised_before]


# SHA-256 of every change of the uninterrupted run, as the `moclo_alerts` lines stored, made by
# the engine before it was rewritten for speed (commit c4eb61d): a faster engine must store
# exactly what the old one did, byte for byte, on the same seeded streams.
CHANGES_OF_C4EB61D = {
    0: (798, "6d203d07df1efff8735a3b7bdadd696c6748ec55bb6a74a267c1022fb804ff7b"),
    1: (830, "b253cfc762bcaef4074480b8b3f78b27bc431c7ef49a22c5fbea2436c5345797"),
    2: (809, "0686251e4e2f1b259f0d338ffc7ab1dfbb801cd92d5b41c25b1ff8680d325f7a"),
    3: (780, "603635c745e3cb32f3a817a00832cd9e4031841abac58660396e74ec93ec2095"),
    4: (728, "ab7e99f5b9093280416adecb682158c31cd7349ff2613b605c4ac9fd8f532572"),
}


@pytest.mark.parametrize("seed", sorted(CHANGES_OF_C4EB61D))
def test_the_same_stream_stores_byte_identical_alerts_as_the_engine_before(seed: int) -> None:
    wall = Wall(T0)
    got = run(AlertEngine(BOOK, wall_ns=wall), wall, stream(seed))
    lines = b"".join(a.to_line().encode() + b"\n" for a in got)
    assert (len(got), hashlib.sha256(lines).hexdigest()) == CHANGES_OF_C4EB61D[seed]
