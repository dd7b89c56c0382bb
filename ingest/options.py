"""How the ingest service runs: batch sizes, the broker's window, how often each job runs.

Not settings from the environment (those are `core/settings.py`): tests, benchmarks and
`moclo up` choose these in code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest.decode import Limits


@dataclass(frozen=True, slots=True)
class IngestOptions:
    batch_messages: int = 2_000  # messages per InfluxDB write, at most
    batch_bytes: int = 1024 * 1024  # payload bytes per batch, at most (arrays fill it first)
    linger_s: float = 0.02  # how long a non-full batch waits for more messages
    window: int = 10_000  # unacknowledged messages the broker may send us (Receive Maximum)
    # And at most this much payload waiting (arrays): 3 MiB is three batches of arrays, enough
    # to keep decoding fed; 8 MiB held arrays of 3,000 cows' readings at 103 MB peak RSS, 3 MiB
    # at 88 (benchmarks/ingest.py, 300,000 readings in arrays of 50, one run each).
    window_bytes: int = 3 * 1024 * 1024
    limits: Limits = field(default_factory=Limits)
    spool_max_bytes: int = 1024**3
    stall_after_s: float = 60.0  # /healthz: messages waiting and none handled for this long
    summary_every_s: float = 30.0  # how often rejection counts are logged, when they changed
    sweep_every_s: float = 1.0  # how often silent devices are looked for
    retention_every_s: float = 600.0  # how often the database's retention is read again
    snapshot_every_s: float = 30.0  # how often the alert engine's state is saved
    log_alerts: bool = True  # log every alert change (`moclo up` prints them itself)
    alert_rules: bool = True  # False: no rules at all (the benchmark's baseline)
    quiet_gc: bool = True  # freeze start-up objects (ingest/gcpolicy.py)
    # paho's stock MQTT client instead of ingest/paho_fast.py's, as when start-up finds paho
    # lacks a private name that one uses; slower, nothing lost (a test forces the fallback)
    stock_mqtt_client: bool = False
    # The engine's partition set (queues moclo.partition.{set}.{n}): one per deployment on a
    # cluster; tests take their own so that they do not consume each other's.
    engine_partition_set: str = "telemetry"
