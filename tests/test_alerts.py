"""The alert engine: one alert per episode, hysteresis, reading time not wall time."""

from __future__ import annotations

from devices.catalogue import DEVICE_TYPES
from devices.topics import DeviceAddress
from ingest.alerts import AlertEngine
from ingest.decode import ValidReading

COW = DeviceAddress("farm", "cow_tracker", "cow-1")
ROOM = DeviceAddress("home", "thermostat", "th-1")


def cow(ts: int, temp: float) -> ValidReading:
    reading = DEVICE_TYPES["cow_tracker"].reading.model_validate(
        {
            "ts": ts,
            "seq": ts,
            "body_temp_c": temp,
            "activity": 300,
            "rumination_min": 30,
            "lat": 52.0,
            "lon": 5.0,
            "battery_pct": 80.0,
        }
    )
    return ValidReading(COW, reading)


def room(ts: int, temp: float) -> ValidReading:
    reading = DEVICE_TYPES["thermostat"].reading.model_validate(
        {
            "ts": ts,
            "seq": ts,
            "temp_c": temp,
            "setpoint_c": 20.0,
            "humidity_pct": 40.0,
            "heating": True,
        }
    )
    return ValidReading(ROOM, reading)


def run(engine: AlertEngine, readings: list[ValidReading]) -> list[tuple[int, str, str]]:
    return [(a.ts_ns // 10**9, a.rule, a.state) for r in readings for a in engine.evaluate(r)]


def test_a_long_fever_is_one_alert_and_recovery_resolves_it() -> None:
    temps = [38.6, 39.5, 39.9, 40.2, 39.8, 39.6, 39.0, 38.7]
    changes = run(AlertEngine(), [cow(100 + i, t) for i, t in enumerate(temps)])
    assert changes == [(101, "fever", "raised"), (106, "fever", "resolved")]


def test_hysteresis_keeps_a_hovering_value_from_flapping() -> None:
    temps = [39.5, 39.3, 39.5, 39.4, 39.2, 39.1]
    changes = run(AlertEngine(), [cow(100 + i, t) for i, t in enumerate(temps)])
    assert changes == [(100, "fever", "raised"), (105, "fever", "resolved")]


def test_frost_risk_below_five_degrees() -> None:
    changes = run(
        AlertEngine(), [room(1, 6.0), room(2, 4.9), room(3, 3.0), room(4, 5.2), room(5, 5.6)]
    )
    assert changes == [(2, "frost_risk", "raised"), (5, "frost_risk", "resolved")]


def test_late_or_repeated_readings_do_not_change_an_episode() -> None:
    engine = AlertEngine()
    assert run(engine, [cow(100, 40.0)]) == [(100, "fever", "raised")]
    assert run(engine, [cow(100, 40.0), cow(90, 38.0), cow(99, 40.0)]) == []
    assert engine.open_alerts() == 1


def test_raise_and_resolve_share_the_episode_id_and_new_episodes_get_new_ids() -> None:
    engine = AlertEngine()
    alerts = [a for r in [cow(1, 40.0), cow(2, 38.0), cow(3, 40.0)] for a in engine.evaluate(r)]
    assert alerts[0].alert_id == alerts[1].alert_id != alerts[2].alert_id
    assert alerts[1].raised_ns == alerts[0].ts_ns


def test_the_readme_lists_every_default_rule(repo_root) -> None:  # type: ignore[no-untyped-def]
    readme = (repo_root / "README.md").read_text()
    for name, device in DEVICE_TYPES.items():
        for rule in device.rules:
            assert f"| `{rule.name}` | `{name}` |" in readme, rule.name
