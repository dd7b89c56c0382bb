"""The cardinality guard: how fast a tenant may bring new devices (new series) into InfluxDB.

Each tenant has a token bucket of new-device admissions (a burst, refilled at a steady rate per
minute). A reading from a device seen before always passes; a reading from a new device takes a
token, and without one it is rejected (`cardinality_limit`) and counted, so a collar that
invents a fresh id for every message cannot create a million series. The burst is sized so
that a restart of ingest, which meets every existing device anew, passes.
"""

from __future__ import annotations

from dataclasses import dataclass

from devices.topics import DeviceAddress


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_ns: int


class CardinalityGuard:
    def __init__(self, *, burst: int, per_minute: int) -> None:
        self._burst = float(burst)
        self._per_ns = per_minute / 60e9
        self._known: set[DeviceAddress] = set()
        self._buckets: dict[str, _Bucket] = {}

    def admit(self, address: DeviceAddress, now_ns: int) -> bool:
        """True if readings from `address` may be stored now."""
        if address in self._known:
            return True
        bucket = self._buckets.get(address.tenant)
        if bucket is None:
            bucket = self._buckets[address.tenant] = _Bucket(self._burst, now_ns)
        elapsed = max(0, now_ns - bucket.updated_ns)
        bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._per_ns)
        bucket.updated_ns = now_ns
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        self._known.add(address)
        return True

    @property
    def known_devices(self) -> int:
        return len(self._known)
