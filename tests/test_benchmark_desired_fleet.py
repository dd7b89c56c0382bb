"""The fleet desired-state benchmark at its short size, so that it cannot rot: every device
applied the change, through moclo's gateway and with the benchmark as gateway, and the broker
dropped nothing. Its correctness, never its timings; the long form
(`python -m benchmarks.desired_fleet`) records its figures in benchmarks/results/desired-fleet.md.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.desired_fleet import SHORT_DEVICES, run


def test_every_device_applies_a_fleet_wide_desired_change(tmp_path: Path) -> None:
    # $SYS every second: "nothing dropped" is a 2.5 s silence of the counter, not a 25 s one.
    baseline, gateway = run(SHORT_DEVICES, tmp_path, interval_s=1.0, sys_interval_s=1)
    assert baseline.applied == SHORT_DEVICES  # every device reported, benchmark as gateway
    assert gateway.applied == SHORT_DEVICES  # every `-desired-1` announced succeeded by ingest
    assert gateway.shown == SHORT_DEVICES  # every device's reading shows the new setpoint
    assert gateway.dropped_before is not None
    assert gateway.dropped_after == gateway.dropped_before
    assert baseline.last_s > 0 and gateway.last_s > 0
