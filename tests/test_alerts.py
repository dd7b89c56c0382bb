"""The alert engine, rule kind by rule kind, on scripted readings in their own time.

No broker here: the engine is pure. `tests/test_alert_delivery.py` drives the same kinds
through a real ingest, broker and database, with a restart mid-episode.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from typing import Any

import orjson
import pytest

from devices.catalogue import DEVICE_TYPES
from devices.place_rules import ArrivalRule, GeofenceRule
from devices.rules import AbsenceRule, ThresholdRule, describe
from devices.topics import DeviceAddress
from ingest.alerts import AcknowledgementInvalid, AcknowledgementRepeated, AlertEngine, snapshot
from ingest.alerts.rulebook import Override, RuleBook
from ingest.decode import ValidReading
from storage.alert_record import Alert, StoredChange, parse_alert_line

S = 1_000_000_000
T0 = 1_795_305_600  # 2026-11-22T00:00:00Z, in seconds
COW = DeviceAddress("farm", "cow_tracker", "cow-1")
ROOM = DeviceAddress("home", "thermostat", "th-1")
METER = DeviceAddress("home", "smart_meter", "meter-1")
CAR = DeviceAddress("family", "car", "car-1")


def reading(address: DeviceAddress, t: float, **fields: Any) -> ValidReading:
    device = DEVICE_TYPES[address.device_type]
    payload = {**device.example, "ts": t, "seq": 1, **fields}
    return ValidReading(address, device.reading.model_validate(payload))


def changes(engine: AlertEngine, items: Iterable[ValidReading]) -> list[tuple[float, str, str]]:
    """(seconds after T0, rule, state) of every change, in order."""
    return [((a.ts_ns / S) - T0, a.rule, a.state) for item in items for a in engine.evaluate(item)]


def cows(temps: list[float], every_s: int = 60, **fields: Any) -> list[ValidReading]:
    return [reading(COW, T0 + i * every_s, body_temp_c=t, **fields) for i, t in enumerate(temps)]


# -- threshold -----------------------------------------------------------------------------


def test_a_long_fever_is_one_alert_raised_at_the_third_hot_reading() -> None:
    temps = [38.6, 39.6, 39.9, 40.2, 40.1, 39.8, 39.6, 39.0, 38.8, 38.7, 38.6]
    assert changes(AlertEngine(), cows(temps)) == [
        (180, "fever", "raised"),  # the third reading at >= 39.5
        (540, "fever", "resolved"),  # the third reading below 39.2
    ]


def test_a_blip_shorter_than_the_rule_asks_raises_nothing() -> None:
    assert changes(AlertEngine(), cows([38.6, 39.8, 40.0, 38.7, 39.7, 38.6])) == []


def test_a_flapping_value_is_one_alert_until_it_settles() -> None:
    # Across both levels on every reading: hysteresis alone would raise and resolve each time.
    flapping = [39.6, 39.6, 39.6] + [39.0, 39.7] * 10 + [38.8, 38.7, 38.6]
    assert changes(AlertEngine(), cows(flapping)) == [
        (120, "fever", "raised"),
        (25 * 60, "fever", "resolved"),
    ]


def test_a_value_between_the_levels_keeps_the_alert_open() -> None:
    temps = [39.6, 39.7, 39.8] + [39.3, 39.4, 39.3, 39.4] * 3
    assert changes(AlertEngine(), cows(temps)) == [(120, "fever", "raised")]


def test_not_moving_needs_two_hours_of_stillness() -> None:
    engine = AlertEngine()
    # 1 h 50 min still, then a few steps: nothing.
    still = [reading(COW, T0 + i * 600, activity=3) for i in range(12)]
    moved = [reading(COW, T0 + 7200, activity=300)]
    assert changes(engine, still + moved) == []
    # Then still from 2:10 for two hours: raised on the reading two hours in.
    again = [reading(COW, T0 + 7800 + i * 600, activity=2) for i in range(14)]
    result = changes(engine, again)
    assert result == [(7800 + 7200, "not_moving", "raised")]


def test_older_and_repeated_readings_change_nothing() -> None:
    engine = AlertEngine()
    assert changes(engine, cows([39.6, 39.7, 39.8])) == [(120, "fever", "raised")]
    late = [reading(COW, T0 + 30, body_temp_c=38.0), reading(COW, T0 + 120, body_temp_c=38.0)]
    assert changes(engine, late * 3) == []


# -- delta ---------------------------------------------------------------------------------


def meter(t: float, kwh: float) -> ValidReading:
    return reading(METER, T0 + t, energy_kwh=kwh)


def test_a_meter_counter_going_backwards_is_tamper_until_an_hour_of_sane_counting() -> None:
    items = [meter(i * 10, 100 + i * 0.01) for i in range(5)]
    items.append(meter(50, 90.0))  # the counter jumps back
    items += [meter(60 + i * 600, 90 + i * 0.1) for i in range(8)]
    assert changes(AlertEngine(), items) == [
        (50, "counter_backwards", "raised"),
        (60 + 3600, "counter_backwards", "resolved"),
    ]


def room(minute: int, temp: float, heating: bool = True) -> ValidReading:
    return reading(ROOM, T0 + minute * 60, temp_c=temp, heating=heating, setpoint_c=20.0)


def test_heating_for_an_hour_without_warming_is_a_heater_failure() -> None:
    engine = AlertEngine()
    # A working heater: on for 40 minutes, warming fast, then off.
    working = [room(m, 17.0 + m * 0.08) for m in range(0, 45, 5)] + [room(45, 20.5, False)]
    assert changes(engine, working) == []
    # On from minute 60 and the room drifts down: raised once the hour is covered.
    broken = [room(60 + m, 19.0 - m * 0.01) for m in range(0, 125, 5)]
    assert changes(engine, broken) == [(120 * 60, "heater_failure", "raised")]
    # One warm reading (sun on the sensor) does not end it; two readings without heating do.
    assert changes(engine, [room(185, 19.5), room(188, 17.4)]) == []
    assert changes(engine, [room(190, 17.5, heating=False), room(191, 17.5, heating=False)]) == [
        (191 * 60, "heater_failure", "resolved")
    ]


# -- baseline ------------------------------------------------------------------------------


def activity_day(day: int, factor: float = 1.0, hours: Iterable[int] = range(24)) -> list[Any]:
    """A cow's activity every 10 minutes: a daily rhythm, 400 steps/h on average."""
    out = []
    for hour in hours:
        for tenth in range(6):
            t = T0 + day * 86_400 + hour * 3600 + tenth * 600
            level = 400 * (1 + 0.6 * math.cos((hour - 13) / 24 * 2 * math.pi))
            out.append(reading(COW, t, activity=round(level * factor)))
    return out


def test_a_cow_in_heat_against_her_usual_for_the_hour() -> None:
    engine = AlertEngine()
    normal = [r for day in range(2) for r in activity_day(day)]
    assert changes(engine, normal) == []
    heat = activity_day(2, factor=3.0, hours=range(0, 8)) + activity_day(2, hours=range(8, 14))
    result = changes(engine, heat)
    rules = [(rule, state) for _, rule, state in result]
    assert rules == [("in_heat", "raised"), ("in_heat", "resolved")]
    raised_at, resolved_at = result[0][0] - 2 * 86_400, result[1][0] - 2 * 86_400
    # Raised once the smoothed activity has been 1.8x her usual for the `for` hour.
    assert 3600 <= raised_at <= 2 * 3600
    assert 8 * 3600 <= resolved_at <= 9 * 3600


def test_a_baseline_says_nothing_while_it_learns() -> None:
    # A wildly active first day: no history yet, so no heat.
    assert changes(AlertEngine(), activity_day(0, factor=4.0)) == []


def test_calving_soon_when_temperature_drops_half_a_degree_below_her_usual() -> None:
    engine = AlertEngine()
    usual = [reading(COW, T0 + i * 600, body_temp_c=38.6) for i in range(6 * 30)]
    assert changes(engine, usual) == []
    start = T0 + 6 * 30 * 600
    drop = [reading(COW, start + i * 600, body_temp_c=38.05) for i in range(6 * 4)]
    result = changes(engine, drop)
    assert [(rule, state) for _, rule, state in result] == [("calving_soon", "raised")]
    alert = engine.open_list()[0]
    assert "from her usual 38.6" in alert.message


# -- absence -------------------------------------------------------------------------------


class Wall:
    """A wall clock the test moves by hand."""

    def __init__(self, t: float) -> None:
        self.ns = int(t * S)

    def __call__(self) -> int:
        return self.ns


def test_a_gap_in_a_replay_is_a_silence_raised_at_its_deadline_and_resolved_by_the_return() -> None:
    engine = AlertEngine(wall_ns=Wall(T0 + 10 * 86_400))
    items = [room(m, 20.0, heating=False) for m in range(0, 10)]  # every minute
    items.append(room(60, 20.0, heating=False))  # 51 minutes of nothing
    assert changes(engine, items) == [
        # 5 intervals of a minute is less than the rule's 10 minutes at least.
        ((9 + 10) * 60, "silent", "raised"),
        (60 * 60, "silent", "resolved"),
    ]


def test_a_stream_that_stops_is_noticed_by_the_wall_clock() -> None:
    wall = Wall(T0)
    engine = AlertEngine(wall_ns=wall)
    for m in range(10):
        wall.ns = (T0 + m * 60) * S
        engine.evaluate(room(m, 20.0, heating=False))
    wall.ns = (T0 + 9 * 60 + 599) * S
    assert engine.sweep() == []
    wall.ns = (T0 + 9 * 60 + 600) * S
    [alert] = engine.sweep()
    assert (alert.rule, alert.state, alert.ts_ns) == ("silent", "raised", (T0 + 19 * 60) * S)
    assert alert.message == "no reading for 10m"
    wall.ns += 3600 * S
    assert engine.sweep() == []  # one alert per silence
    [back] = engine.evaluate(room(90, 20.0, heating=False))
    assert (back.state, back.alert_id) == ("resolved", alert.alert_id)


def test_a_device_ahead_of_the_wall_clock_does_not_make_the_others_silent() -> None:
    wall = Wall(T0 + 60)
    engine = AlertEngine(wall_ns=wall)
    other = DeviceAddress("home", "thermostat", "th-2")
    for m in range(4):
        engine.evaluate(room(m - 3, 20.0, heating=False))
    # A clock 9 minutes fast on another device of the tenant.
    engine.evaluate(reading(other, T0 + 60 + 540, temp_c=20.0, heating=False))
    assert engine.tenant_now("home", wall.ns) == (T0 + 60) * S


# -- geofence ------------------------------------------------------------------------------

HOME = (52.0907, 5.1214)


def geofence_book(rule: GeofenceRule) -> RuleBook:
    return RuleBook([Override("car", rule, rule.name, tenant="family")])


def car(t: float, lat: float, lon: float = HOME[1]) -> ValidReading:
    return reading(CAR, T0 + t, lat=lat, lon=lon)


def test_a_car_near_home_turns_the_lights_on_once() -> None:
    near_home = GeofenceRule(
        name="near_home",
        where="inside",
        center=HOME,
        radius_m=1000,
        margin_m=100,
        severity="info",
        message="{distance_m:.0f} m inside: lights on",
    )
    engine = AlertEngine(geofence_book(near_home))
    metres = 1 / 111_195  # degrees of latitude per metre
    track = [5000, 2000, 990, 500, 1050, 980, 1090, 1200, 3000]
    result = changes(engine, [car(i * 5, HOME[0] + d * metres) for i, d in enumerate(track)])
    assert result == [(10, "near_home", "raised"), (35, "near_home", "resolved")]


def two_hours_from_home() -> ArrivalRule:
    return ArrivalRule(
        name="two_hours_from_home",
        center=HOME,
        within_s=7200,
        detour_s=1800,
        severity="info",
        message="home around {eta} ({minutes:.0f} min)",
    )


def test_a_car_two_hours_from_home_at_its_speed_raises_once_with_the_arrival_time() -> None:
    engine = AlertEngine(geofence_book(two_hours_from_home()))
    km = 1 / 111.195  # degrees of latitude per kilometre
    # (seconds after T0, km from home, speed): 200 km at 90 km/h is 2 h 13 min; 170 km is
    # 1 h 53 min (raise); parked 150 km away at 0 km/h holds; 150 km at 50 km/h is 3 h, past
    # 2 h + 30 min (resolve); then home at walking pace (arrived resolves, nothing open).
    track = [(0, 200, 90), (600, 170, 90), (1200, 150, 0), (1800, 150, 50), (2400, 140, 90)]
    items = [
        reading(CAR, T0 + t, lat=HOME[0] + d * km, lon=HOME[1], speed_kmh=v) for t, d, v in track
    ]
    alerts = [a for item in items for a in engine.evaluate(item)]
    assert [(a.ts_ns / S - T0, a.state) for a in alerts] == [
        (600, "raised"),
        (1800, "resolved"),
        (2400, "raised"),
    ]
    # 170 km at 90 km/h = 6,800 s after 00:10 UTC: 02:03 UTC.
    assert alerts[0].message == "home around 02:03 UTC (113 min)"
    assert alerts[0].value == pytest.approx(6800, rel=1e-3)


def test_a_car_that_arrives_resolves_its_arrival_alert() -> None:
    engine = AlertEngine(geofence_book(two_hours_from_home()))
    km = 1 / 111.195
    track = [(0, 100, 80), (3600, 20, 80), (4500, 0.1, 3)]
    items = [
        reading(CAR, T0 + t, lat=HOME[0] + d * km, lon=HOME[1], speed_kmh=v) for t, d, v in track
    ]
    assert changes(engine, items) == [
        (0, "two_hours_from_home", "raised"),
        (4500, "two_hours_from_home", "resolved"),
    ]


def test_leaving_home_or_a_hop_to_the_shop_is_not_arriving() -> None:
    engine = AlertEngine(geofence_book(two_hours_from_home()))
    km = 1 / 111.195
    # Leaving home (0.1 km) at 50 km/h: minutes from home, but going away; then a hop to
    # 3 km and back (under min_trip_m, 5 km): nothing. Then 40 km out and back: one raise.
    track = [(0, 0.1, 0), (60, 1, 50), (120, 3, 50), (180, 2, 50), (240, 0.1, 5)]
    track += [(300, 40, 90), (900, 30, 90), (2400, 0.1, 5)]
    items = [
        reading(CAR, T0 + t, lat=HOME[0] + d * km, lon=HOME[1], speed_kmh=v) for t, d, v in track
    ]
    assert changes(engine, items) == [
        (900, "two_hours_from_home", "raised"),
        (2400, "two_hours_from_home", "resolved"),
    ]


@pytest.mark.parametrize(
    ("changes_", "error"),
    [
        ({"within_s": 0}, "within must be a duration above zero"),
        ({"min_speed_kmh": 0}, "min_speed_kmh must be above zero"),
        ({"center": (95.0, 5.0)}, "is not a [lat, lon] pair"),
        ({"message": "{eta:d}"}, "cannot be filled in"),
    ],
)
def test_an_arrival_rule_says_what_is_wrong(changes_: dict[str, Any], error: str) -> None:
    settings: dict[str, Any] = {
        "name": "eta",
        "center": HOME,
        "within_s": 60,
        "severity": "info",
        "message": "m",
    } | changes_
    with pytest.raises(ValueError, match=re.escape(error)):
        ArrivalRule(**settings)


def test_a_cow_outside_her_pasture_polygon() -> None:
    pasture = GeofenceRule(
        name="left_pasture",
        where="outside",
        polygon=((52.089, 5.119), (52.089, 5.124), (52.093, 5.124), (52.093, 5.119)),
        margin_m=20,
        severity="warning",
        message="{distance_m:.0f} m outside the pasture",
    )
    engine = AlertEngine(RuleBook([Override("cow_tracker", pasture, "left_pasture")]))
    path = [(52.091, 5.121), (52.0929, 5.1215), (52.0935, 5.1215), (52.0929, 5.1215)]
    path += [(52.0925, 5.1215)]
    items = [reading(COW, T0 + i * 60, lat=lat, lon=lon) for i, (lat, lon) in enumerate(path)]
    result = changes(engine, items)
    assert result == [(120, "left_pasture", "raised"), (240, "left_pasture", "resolved")]


# -- acknowledging -------------------------------------------------------------------------


def test_acknowledging_an_open_alert_once() -> None:
    engine = AlertEngine()
    [raised] = [a for r in cows([39.6, 39.7, 39.8]) for a in engine.evaluate(r)]
    ack = engine.acknowledge("farm", raised.alert_id, "dr-vos", "on my way")
    assert (ack.state, ack.acknowledged_by, ack.note) == ("acknowledged", "dr-vos", "on my way")
    assert ack.ts_ns == raised.ts_ns + 1  # after the newest reading: changes stay in order
    with pytest.raises(AcknowledgementInvalid, match="already acknowledged by dr-vos"):
        engine.acknowledge("farm", raised.alert_id, "someone-else")
    with pytest.raises(AcknowledgementInvalid, match="no open alert"):
        engine.acknowledge("other-farm", raised.alert_id, "x")
    resolved = [a for r in cows([38.6] * 3, every_s=1) for a in engine.evaluate(r)]
    assert resolved == []  # older than the newest reading: not judged
    later = [reading(COW, T0 + 600 + i, body_temp_c=38.6) for i in range(3)]
    [done] = [a for r in later for a in engine.evaluate(r)]
    assert (done.state, done.acknowledged_by) == ("resolved", "dr-vos")
    with pytest.raises(AcknowledgementInvalid, match="no open alert"):
        engine.acknowledge("farm", raised.alert_id, "dr-vos")


def test_acknowledging_again_as_the_same_person_is_a_repeat_not_a_refusal() -> None:
    """A double click (or, on the engine, a copy forwarded twice) changes nothing and is not
    recorded as a bad acknowledgement; someone else's is still refused."""
    engine = AlertEngine()
    [raised] = [a for r in cows([39.6, 39.7, 39.8]) for a in engine.evaluate(r)]
    first = engine.acknowledge("farm", raised.alert_id, "dr-vos")
    with pytest.raises(AcknowledgementRepeated):
        engine.acknowledge("farm", raised.alert_id, "dr-vos", "again")
    with pytest.raises(AcknowledgementInvalid, match="already acknowledged by dr-vos") as other:
        engine.acknowledge("farm", raised.alert_id, "someone-else")
    assert not isinstance(other.value, AcknowledgementRepeated)
    later = [reading(COW, T0 + 600 + i, body_temp_c=38.6) for i in range(3)]
    [done] = [a for r in later for a in engine.evaluate(r)]
    assert (done.state, done.acknowledged_by, done.ts_ns > first.ts_ns) == (
        "resolved", "dr-vos", True)  # fmt: skip


# -- state over restarts -------------------------------------------------------------------


def mixed_day() -> list[ValidReading]:
    """Two days of a cow with a fever and a heat, a meter going back, a room going silent."""
    items = [r for day in range(2) for r in activity_day(day)]
    items += activity_day(2, factor=3.0, hours=range(0, 6))
    items += [reading(COW, T0 + 2 * 86_400 + 6 * 3600 + i * 600, body_temp_c=40.0)
              for i in range(6)]  # fmt: skip
    items += [meter(2 * 86_400 + i * 60, 100 - (i == 3) * 5 + i * 0.01) for i in range(10)]
    items += [room(2 * 1440 + m, 20.0, heating=False) for m in (0, 1, 2, 3, 4, 40)]
    items.sort(key=lambda r: r.reading.ts)
    return items


@pytest.mark.parametrize("cut", [0.25, 0.5, 0.8, 0.9, 0.97])
def test_a_restart_from_a_snapshot_continues_exactly_where_it_stopped(cut: float) -> None:
    items = mixed_day()
    whole = AlertEngine(wall_ns=Wall(T0))
    expected = [a for r in items for a in whole.evaluate(r)]
    assert {a.rule for a in expected} >= {"in_heat", "fever", "counter_backwards", "silent"}

    first = AlertEngine(wall_ns=Wall(T0))
    at = int(len(items) * cut)
    got = [a for r in items[:at] for a in first.evaluate(r)]
    second = AlertEngine(wall_ns=Wall(T0))
    snapshot.load(second, snapshot.dump(first))
    got += [a for r in items[at:] for a in second.evaluate(r)]
    assert got == expected


def test_stored_changes_newer_than_the_snapshot_win() -> None:
    """A crash after an alert was stored but before the snapshot: no second raise."""
    engine = AlertEngine()
    old = snapshot.dump(engine)  # taken before the fever
    [raised] = [a for r in cows([39.6, 39.7, 39.8]) for a in engine.evaluate(r)]

    restarted = AlertEngine()
    snapshot.load(restarted, old)
    stored = parse_alert_line(raised.to_line())
    assert stored is not None
    assert restarted.apply_stored([stored]) == []
    assert [a.alert_id for a in restarted.open_list()] == [raised.alert_id]
    # The fever goes on: nothing new. It ends: resolved under the same id.
    more = [reading(COW, T0 + 300 + i * 60, body_temp_c=t) for i, t in enumerate([40.0] * 3)]
    assert [a for r in more for a in restarted.evaluate(r)] == []
    end = [reading(COW, T0 + 600 + i * 60, body_temp_c=38.6) for i in range(3)]
    [resolved] = [a for r in end for a in restarted.evaluate(r)]
    assert (resolved.state, resolved.alert_id) == ("resolved", raised.alert_id)


def test_a_stored_resolution_closes_what_the_snapshot_had_open() -> None:
    engine = AlertEngine()
    [raised] = [a for r in cows([39.6, 39.7, 39.8]) for a in engine.evaluate(r)]
    with_open = snapshot.dump(engine)
    end = [reading(COW, T0 + 600 + i * 60, body_temp_c=38.6) for i in range(3)]
    [resolved] = [a for r in end for a in engine.evaluate(r)]

    restarted = AlertEngine()
    snapshot.load(restarted, with_open)
    stored = [parse_alert_line(a.to_line()) for a in (raised, resolved)]
    restarted.apply_stored([s for s in stored if s is not None])
    assert restarted.open_alerts() == 0


def test_an_open_alert_whose_rule_is_gone_is_resolved_on_restore() -> None:
    stored = StoredChange(
        "farm", "cow_tracker", "cow-1", "old_rule", "warning", "raised", "abcdefabcdef",
        T0 * S, T0 * S, T0 * S, 1.0, "",
    )  # fmt: skip
    [orphan] = AlertEngine().apply_stored([stored])
    assert (orphan.state, orphan.alert_id, orphan.rule) == ("resolved", "abcdefabcdef", "old_rule")
    assert "no longer applies" in orphan.message


def test_an_alert_line_reads_back_as_written() -> None:
    alert = Alert(
        alert_id="0123456789ab", state="acknowledged", rule="fever", kind="threshold",
        severity="warning", tenant="farm", device_type="cow_tracker", device_id="cow-1",
        value=39.75, message='fever: "hot", 40 °C\\', ts_ns=T0 * S + 5, first_seen_ns=T0 * S,
        last_seen_ns=T0 * S + 4, acknowledged_by="dr vos, vet",
    )  # fmt: skip
    stored = parse_alert_line(alert.to_line())
    assert stored == StoredChange(
        "farm", "cow_tracker", "cow-1", "fever", "warning", "acknowledged", "0123456789ab",
        T0 * S + 5, T0 * S, T0 * S + 4, 39.75, "dr vos, vet", 'fever: "hot", 40 °C\\', "threshold",
    )  # fmt: skip
    assert parse_alert_line("cow_tracker,tenant=farm x=1 1") is None


# -- rules as data -------------------------------------------------------------------------


def test_a_tenant_override_applies_to_that_tenant_only() -> None:
    gentle = ThresholdRule(
        name="fever", field="body_temp_c", direction="above", raise_at=40.0, clear_at=39.5,
        severity="critical", message="{value}",
    )  # fmt: skip
    book = RuleBook([Override("cow_tracker", gentle, "fever", tenant="farm")])
    engine = AlertEngine(book)
    other = DeviceAddress("other-farm", "cow_tracker", "cow-1")
    hot = [39.7, 39.8, 39.9]
    assert changes(engine, cows(hot)) == []
    assert [
        a.rule
        for i, t in enumerate(hot)
        for a in engine.evaluate(reading(other, T0 + i, body_temp_c=t))
    ] == ["fever"]


def test_every_default_rule_watches_real_fields_and_every_type_has_a_deadman() -> None:
    for device in DEVICE_TYPES.values():
        assert all(device.rule_problem(rule) is None for rule in device.rules)
        assert any(isinstance(rule, AbsenceRule) for rule in device.rules), device.name


def test_the_alerts_page_lists_every_default_rule_as_it_is(repo_root) -> None:  # type: ignore[no-untyped-def]
    readme = (repo_root / "docs" / "alerts.md").read_text()
    for device in DEVICE_TYPES.values():
        for rule in device.rules:
            raised, resolved = describe(rule)
            row = f"| `{rule.name}` | `{device.name}` | {raised} | {resolved} | {rule.severity} |"
            assert row in readme, row


@pytest.mark.parametrize("message", ["{value:d}", "{nope}", "{0}", "{silent_for:.1f}", "{"])
def test_a_message_that_cannot_be_filled_in_is_refused_when_the_rule_is_made(message: str) -> None:
    """Refused up front, so a bad template can never fail later, on a reading, inside ingest."""
    with pytest.raises(ValueError, match="message"):
        ThresholdRule(
            name="x", field="body_temp_c", direction="above", raise_at=1, clear_at=0,
            severity="info", message=message,
        )  # fmt: skip


def test_acknowledgements_come_after_the_readings_of_their_batch() -> None:
    """An ack sent right after the reading that raised its alert may share its batch."""
    from ingest.cardinality import CardinalityGuard
    from ingest.decode import Decoder
    from ingest.pipeline import Pipeline
    from ingest.rejections import RejectionLog
    from ingest.source import Message
    from storage.alert_record import alert_id

    pipeline = Pipeline(
        Decoder("p"), AlertEngine(), RejectionLog(), CardinalityGuard(burst=10, per_minute=10)
    )
    now = time.time_ns()
    start = now // S - 600
    topic = "p/farm/cow_tracker/cow-1/telemetry"
    hot = [
        Message(topic, orjson.dumps({**DEVICE_TYPES["cow_tracker"].example, "ts": start + i,
                                     "seq": i, "body_temp_c": 40.0}), i, 1, now, 1)
        for i in range(3)
    ]  # fmt: skip
    the_id = alert_id("farm", "cow-1", "fever", start * S)
    ack = Message("p/farm/acks/vet", orjson.dumps({"id": the_id}), 9, 1, now, 1)
    bad = [
        Message("p/farm/acks/vet", b'{"id": "nope"}', 10, 1, now, 1),
        Message("p/Farm Two/acks/vet", orjson.dumps({"id": the_id}), 11, 1, now, 1),
    ]
    batch = pipeline.prepare([*hot[:2], ack, hot[2], *bad])
    assert [(a.state, a.alert_id) for a in batch.alerts] == [
        ("raised", the_id),
        ("acknowledged", the_id),
    ]
    assert [(r.reason, r.tenant) for r in batch.rejections] == [
        ("bad_ack", "farm"),
        ("bad_ack", "_invalid"),
    ]
    assert "id: String should match pattern" in batch.rejections[0].error
    assert "must match" in batch.rejections[1].error


@pytest.mark.parametrize(
    ("topic", "body", "stored"),
    [
        ("p/farm/acks/vet", {}, ("vet", "on it")),
        ("p/farm/acks/vet", {"by": "vet"}, ("vet", "on it")),
        (
            "p/farm/acks/vet",
            {"by": "dr-vos"},
            ("vet", "on it (the message said by 'dr-vos'; not verified)"),
        ),
        ("p/farm/acks/dash/on-behalf", {"by": "Dr.Vos@farm"}, ("Dr.Vos@farm", "on it")),
        ("p/farm/acks", {"by": "vet"}, "must name who acknowledges: p/farm/acks/{account}"),
        ("p/farm/acks/dash/on-behalf", {}, 'names the person in "by"'),
        ("p/farm/acks/Vet", {}, "must match ^[a-z][a-z0-9_-]{0,63}$"),
        ("p/farm/acks/vet/extra", {}, "must name who acknowledges"),
        ("p/farm/acks/vet/on-behalf/x", {"by": "x"}, "must name who acknowledges"),
    ],
    ids=[
        "own-topic",
        "own-topic-own-name",
        "own-topic-other-name-kept-in-note",
        "serve-on-behalf",
        "older-topic-without-account",
        "on-behalf-without-by",
        "not-an-account-name",
        "extra-level",
        "on-behalf-extra-level",
    ],
)
def test_the_acknowledger_comes_from_the_topic(
    topic: str, body: dict[str, str], stored: tuple[str, str] | str
) -> None:
    """The account in the topic is who acknowledged (the broker's ACL proves it); the payload's
    `by` is believed only on a serve account's on-behalf topic; anything else is a bad_ack
    rejection that says which topic to use."""
    from ingest.cardinality import CardinalityGuard
    from ingest.decode import Decoder
    from ingest.pipeline import Pipeline
    from ingest.rejections import RejectionLog
    from ingest.source import Message
    from storage.alert_record import alert_id

    pipeline = Pipeline(
        Decoder("p"), AlertEngine(), RejectionLog(), CardinalityGuard(burst=10, per_minute=10)
    )
    now = time.time_ns()
    start = now // S - 600
    hot = [
        Message("p/farm/cow_tracker/cow-1/telemetry", orjson.dumps({
            **DEVICE_TYPES["cow_tracker"].example, "ts": start + i, "seq": i, "body_temp_c": 40.0
        }), i, 1, now, 1)
        for i in range(3)
    ]  # fmt: skip
    the_id = alert_id("farm", "cow-1", "fever", start * S)
    ack = Message(topic, orjson.dumps({"id": the_id, **body, "note": "on it"}), 9, 1, now, 1)
    batch = pipeline.prepare([*hot, ack])
    if isinstance(stored, tuple):
        assert batch.rejections == []
        acked = batch.alerts[-1]
        assert (acked.state, acked.acknowledged_by, acked.note) == ("acknowledged", *stored)
    else:
        [rejection] = batch.rejections
        assert (rejection.reason, rejection.tenant) == ("bad_ack", "farm")
        assert stored in rejection.error
        assert [a.state for a in batch.alerts] == ["raised"]


def test_a_device_known_only_from_the_store_survives_the_next_snapshot() -> None:
    """A baseline that has seen no reading yet has no value ("NaN"); JSON has no NaN."""
    engine = AlertEngine()
    engine.apply_stored(
        [StoredChange("farm", "cow_tracker", "cow-1", "fever", "warning", "raised",
                      "abcdefabcdef", T0 * S, T0 * S, T0 * S, 39.8, "")]
    )  # fmt: skip
    restored = AlertEngine()
    snapshot.load(restored, snapshot.dump(engine))
    assert [a.alert_id for a in restored.open_list()] == ["abcdefabcdef"]


def test_a_silence_is_resolved_after_it_was_raised_even_by_buffered_readings() -> None:
    """A car in a garage uploads its buffer later: its old readings cannot end the silence
    before it began, or the stored changes would say it is still open."""
    wall = Wall(T0)
    engine = AlertEngine(wall_ns=wall)
    garage, street = DeviceAddress("fam", "car", "car-1"), DeviceAddress("fam", "car", "car-2")
    for m in range(0, 40, 10):
        wall.ns = (T0 + m * 60) * S
        engine.evaluate(reading(garage, T0 + m * 60))
        engine.evaluate(reading(street, T0 + m * 60))
    out = []
    for m in range(40, 200, 10):
        wall.ns = (T0 + m * 60) * S
        engine.evaluate(reading(street, T0 + m * 60))
        out += engine.sweep()
    for m in range(40, 200, 10):
        out += engine.evaluate(reading(garage, T0 + m * 60))
    [raised, resolved] = out
    assert (raised.state, resolved.state) == ("raised", "resolved")
    assert resolved.ts_ns > raised.ts_ns


def test_a_burst_of_readings_does_not_teach_a_tiny_interval() -> None:
    pacemaker = DeviceAddress("clinic", "pacemaker", "pm-1")
    times = [T0 + h * 3600 for h in range(6)]  # hourly
    times += [times[-1] + 10 * (i + 1) for i in range(10)]  # an event: every 10 s
    times += [times[-1] + 3600 * (h + 1) for h in range(4)]  # hourly again
    assert changes(AlertEngine(), [reading(pacemaker, t) for t in times]) == []


@pytest.mark.parametrize("baseline", ["rolling_24h", "same_hour"])
@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_the_remembered_rolling_median_is_the_median_judged_afresh(
    seed: int, baseline: str
) -> None:
    """A baseline state keeps its hour's baseline and sums while readings stay in that hour, and
    moves the rolling median from hour to hour by one mean out and one in; judging from a copy
    without any of it, which reads every slot, reading by reading (late readings of earlier
    hours and gaps among them), gives the same verdicts and the same saved state."""
    import copy
    import random

    from devices.catalogue import DEVICE_TYPES
    from devices.rules import BaselineRule
    from ingest.alerts.baselines import BaselineState
    from ingest.alerts.conditions import judge

    device = DEVICE_TYPES["cow_tracker"]
    rule = next(r for r in device.rules if isinstance(r, BaselineRule) and r.baseline == baseline)
    rng = random.Random(seed)
    start = 1795327200 * 10**9
    times = [start + i * 600 * 10**9 for i in range(3 * 144)]  # three days, every 10 min
    times = [t + (5 * 3600 * 10**9 if i > 200 else 0) for i, t in enumerate(times)]  # a gap
    for _ in range(60):  # some arrive late, up to a few hours
        i = rng.randrange(len(times) - 30)
        j = i + rng.randrange(1, 30)
        times[i], times[j] = times[j], times[i]
    state = BaselineState()
    for n, ts in enumerate(times):
        value = rng.randint(100, 900) if rule.field == "activity" else 38.5 + rng.gauss(0, 0.3)
        reading = device.reading.model_validate(
            device.example | {"ts": ts // 10**9, "seq": n, rule.field: value}
        )
        fresh = copy.deepcopy(state)
        fresh.forget()  # nothing remembered: neither the median nor the hour's sums
        learning = n % 7 != 0
        assert judge(rule, state, reading, ts, learning) == judge(
            rule, fresh, reading, ts, learning
        )
        assert state.dump() == fresh.dump()


def test_devices_with_a_rule_share_its_judge_and_each_keeps_its_own_history() -> None:
    """A rule's judge holds only the rule's settings: one for every device it applies to (what
    a cow's rule state costs depends on it); each device's history stays its own."""
    from ingest.alerts.conditions import judge_for

    engine = AlertEngine()
    other = DeviceAddress("farm", "cow_tracker", "cow-2")
    engine.evaluate(reading(COW, T0))
    engine.evaluate(reading(other, T0, body_temp_c=39.9))
    first, second = (
        engine.devices[("farm", "cow_tracker", "cow-1")],
        engine.devices[("farm", "cow_tracker", "cow-2")],
    )
    assert [t.rule.name for t in first.trackers] == ["fever", "not_moving", "in_heat",
                                                    "calving_soon"]  # fmt: skip
    for mine, theirs in zip(first.trackers, second.trackers, strict=True):
        assert mine.judge is theirs.judge is judge_for(mine.rule)
        assert mine.condition is None or mine.condition is not theirs.condition
    # cow-2's hot reading counts towards her fever, not cow-1's
    assert (first.trackers[0].pending_count, second.trackers[0].pending_count) == (0, 1)
    assert first.absence is not None
    with pytest.raises(TypeError, match="judged from the device's silence"):
        first.absence.judge.judge(None, reading(COW, T0 + 60).reading, T0 + 60, True)


@pytest.mark.parametrize("slots", [119, 0, 125])
def test_a_snapshot_whose_baseline_history_is_the_wrong_size_is_refused_at_load(
    slots: int,
) -> None:
    """Bug (review of round four; in 3e5476f as well): a snapshot whose baseline slots are fewer
    than 24 x 5 numbers (a hand edit, a disk that lost part of it) was taken in, and a reading
    of the cow in an hour whose slot is missing raised IndexError out of `evaluate`, which
    ingest does not catch: that cow's readings would stop ingest. `snapshot.load` promises to
    refuse what this version could not have written (SnapshotInvalid, set aside by ingest) so
    that nothing of the wrong shape fails later, mid-ingest; more numbers are refused too."""
    engine = AlertEngine()
    for item in cows([38.6] * 3):
        engine.evaluate(item)
    saved = orjson.loads(snapshot.dump(engine))
    good = orjson.dumps(saved)  # positive control: the snapshot as written loads
    assert snapshot.load(AlertEngine(), good) == 1
    history = saved["devices"][0][6]["calving_soon"][7]
    history[3] = (history[3] * 2)[:slots]
    with pytest.raises(snapshot.SnapshotInvalid, match="calving_soon"):
        snapshot.load(AlertEngine(), orjson.dumps(saved))
