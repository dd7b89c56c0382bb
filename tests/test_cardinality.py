"""The cardinality guard's token bucket, on a simulated clock."""

from __future__ import annotations

from devices.topics import DeviceAddress
from ingest.cardinality import CardinalityGuard

MINUTE_NS = 60 * 10**9


def cow(tenant: str, n: int) -> DeviceAddress:
    return DeviceAddress(tenant, "cow_tracker", f"cow-{n}")


def test_a_burst_then_a_steady_rate_per_tenant() -> None:
    guard = CardinalityGuard(burst=5, per_minute=2)
    admitted = [guard.admit(cow("a", i), 0) for i in range(8)]
    assert admitted == [True] * 5 + [False] * 3
    assert guard.admit(cow("b", 0), 0), "another tenant has its own budget"
    assert not guard.admit(cow("a", 5), MINUTE_NS // 4)
    assert guard.admit(cow("a", 5), MINUTE_NS // 2)  # one token after half a minute
    assert guard.admit(cow("a", 0), MINUTE_NS // 2), "known devices always pass"


def test_the_bucket_never_holds_more_than_the_burst() -> None:
    guard = CardinalityGuard(burst=2, per_minute=1000)
    assert [guard.admit(cow("a", i), 3600 * 10**9) for i in range(3)] == [True, True, False]
