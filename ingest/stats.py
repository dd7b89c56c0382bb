"""What the ingest service counts as it works: read by `/metrics`, tests and `moclo up`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class IngestStats:
    messages: int = 0  # handled: stored (or spooled) and acknowledged
    readings_stored: int = 0  # written to InfluxDB, directly or from the spool
    readings_spooled: int = 0  # appended to the spool while InfluxDB was unavailable
    rejected: int = 0
    alerts_raised: int = 0
    alerts_acknowledged: int = 0
    alerts_resolved: int = 0
    batches_written: int = 0
    open_alerts: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
