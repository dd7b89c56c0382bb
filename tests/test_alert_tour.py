"""The shipped `alert_tour` scenario, end to end: exactly the scripted trouble, nothing else.

Three days of a farm, a cardiology practice and three homes, published as fast as the broker
takes them, through a real ingest: a sick cow (fever), a cow in heat (against her own usual
activity), a failing pacemaker battery and a thermostat that goes offline must each raise one
alert and resolve it, and no healthy device may raise anything.
"""

from __future__ import annotations

import orjson

from core.settings import Settings
from tests.conftest import RunningIngest
from tests.helpers import Influx, simulate_cli, wait_until

EXPECTED = {
    ("de-wei-farm", "cow-0001", "fever"),
    ("de-wei-farm", "cow-0002", "in_heat"),
    ("heart-clinic", "pacemaker-1", "battery_low"),
    ("households", "thermostat-1", "silent"),
}


def test_the_alert_tour_raises_exactly_the_scripted_alerts(
    settings: Settings, influx: Influx, ingest: RunningIngest
) -> None:
    result = simulate_cli(settings, "--scenario", "alert_tour")
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout)
    assert summary["acknowledged"] is True and summary["offline_skipped"] == 36  # 3 h at 5 min
    readings = summary["readings"]

    def stored() -> int:
        return sum(
            influx.count(measurement, "seq")
            for measurement in ("cow_tracker", "pacemaker", "thermostat")
        )

    wait_until(lambda: stored() == readings, timeout_s=60, what="every reading stored")
    wait_until(
        lambda: influx.count("moclo_alerts", "state") >= 2 * len(EXPECTED),
        what="every alert raised and resolved",
    )
    rows = influx.query('SELECT * FROM "moclo_alerts"')
    changes = sorted((r["tenant"], r["device_id"], r["rule"], r["state"]) for r in rows)
    assert changes == sorted(
        (tenant, device, rule, state)
        for tenant, device, rule in EXPECTED
        for state in ("raised", "resolved")
    )
