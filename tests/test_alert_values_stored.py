"""Every alert change the engine makes can be stored: InfluxDB refuses NaN and ±inf field values
(FIELD-NOTES), and a refused change is an alert lost from the store, the dashboard and the
restoration after a restart. Against the real InfluxDB of the fixtures."""

from __future__ import annotations

from devices.catalogue import DEVICE_TYPES
from devices.rules import BaselineRule
from devices.topics import DeviceAddress
from ingest.alerts import AlertEngine
from ingest.alerts.rulebook import Override, RuleBook
from ingest.decode import ValidReading
from storage.alert_record import Alert
from tests.helpers import Influx

START_S = 1_795_305_600  # 2026-11-22T00:00:00Z
SURGE = BaselineRule(
    name="surge", field="power_w", compare="ratio", direction="above", raise_at=3.0,
    clear_at=2.0, min_history_s=0, severity="warning", message="{value:.1f}x the usual",
)  # fmt: skip


def surges(meter_id: str, usual_w: float) -> list[Alert]:
    """A meter drawing `usual_w` for 13 hours (a rolling median needs 12 hours' means), then
    400 W: the changes of the `surge` rule."""
    engine = AlertEngine(RuleBook([Override("smart_meter", SURGE, "surge")]))
    meter = DEVICE_TYPES["smart_meter"]
    address = DeviceAddress("home", "smart_meter", meter_id)
    changes: list[Alert] = []
    for hour in range(14):
        power_w = usual_w if hour < 13 else 400.0
        payload = meter.example | {"ts": START_S + hour * 3600, "seq": hour, "power_w": power_w}
        changes += engine.evaluate(ValidReading(address, meter.reading.model_validate(payload)))
    return changes


def test_a_ratio_against_a_baseline_next_to_zero_makes_no_change_influxdb_refuses(
    influx: Influx,
) -> None:
    """Bug (review of round four): a meter sending denormal watts (5e-324 passes the decoders:
    `ge=0`) learns a baseline of 5e-324 W, and 400 W then scores 400 / 5e-324 = inf: the change
    raised had `value=inf`, which InfluxDB refuses (a partial write), so the alert was lost.
    (3e5476f raised OverflowError out of evaluate instead, making its message.)"""
    normal = surges("meter-1", 100.0)  # positive control: a real surge is raised and stored
    assert [(c.rule, c.state, c.value) for c in normal] == [("surge", "raised", 4.0)]
    changes = normal + surges("meter-2", 5e-324)
    influx.write(c.to_line() for c in changes)  # raises InfluxPartialWrite if one is refused
    stored = influx.query("SELECT value, device_id FROM moclo_alerts")
    assert len(stored) == len(changes)
