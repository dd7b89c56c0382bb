"""What moclo stores in InfluxDB, declared once: each measurement, its tag keys, its fixed fields.

The writers (`lineprotocol.py`, `alert_record.py`) and the readers (`alert_history.py`,
`query/`, the acknowledgement check in ingest) take every name from here, so a name changed
here changes on both sides; `docs/storage-schema.md` describes the same table, and a test holds
the two together. Tags are listed in the order lines carry them (sorted by key, as InfluxDB
prefers); all timestamps are nanoseconds (`precision=ns`).
"""

from __future__ import annotations

from dataclasses import dataclass

# Tag keys and the fields whose names more than one measurement or module uses.
TENANT = "tenant"
DEVICE_ID = "device_id"
DEVICE_TYPE = "device_type"
REASON = "reason"
RULE = "rule"
SEVERITY = "severity"
SEQ = "seq"
TOPIC = "topic"
ERROR = "error"
PAYLOAD = "payload"
ALERT_ID = "alert_id"
STATE = "state"
KIND = "kind"
MESSAGE = "message"
VALUE = "value"
FIRST_SEEN = "first_seen"
LAST_SEEN = "last_seen"
ACKNOWLEDGED_BY = "acknowledged_by"
NOTE = "note"

# moclo's own measurements start with this; readings are named after a device type, which never
# does, so a line's first characters tell a reading from the rest.
OWN_PREFIX = "moclo_"


@dataclass(frozen=True, slots=True)
class Measurement:
    name: str
    tags: tuple[str, ...]
    fields: tuple[str, ...]  # the fixed ones; a reading adds its device type's own

    def group_by(self) -> str:
        """`"tenant", "device_id", …`: one series per tag set, for an InfluxQL GROUP BY; the
        tenant first, the widest grouping, then the others in line order."""
        tags = sorted(self.tags, key=lambda tag: tag != TENANT)
        return ", ".join(f'"{tag}"' for tag in tags)


# A reading: measurement = its device type; fields = the reading's own plus `seq`; time = the
# reading's `ts`, so a reading delivered twice is stored once.
READINGS = Measurement("", tags=(DEVICE_ID, TENANT), fields=(SEQ,))
# A rejected message or element; time = when it arrived; `payload` is its first 1 KiB.
REJECTED = Measurement(
    "moclo_rejected", tags=(DEVICE_TYPE, REASON, TENANT), fields=(TOPIC, ERROR, PAYLOAD)
)
# An unregistered device let through (MOCLO_UNREGISTERED=flag), once per device and run;
# device_id is a field, not a tag, so invented ids add no series.
UNREGISTERED = Measurement(
    "moclo_unregistered", tags=(DEVICE_TYPE, TENANT), fields=(DEVICE_ID, TOPIC)
)
# An alert's change of state; see `alert_record.py`. first_seen and last_seen are ns.
ALERTS = Measurement(
    "moclo_alerts",
    tags=(DEVICE_ID, DEVICE_TYPE, RULE, SEVERITY, TENANT),
    fields=(ALERT_ID, STATE, KIND, MESSAGE, VALUE, FIRST_SEEN, LAST_SEEN, ACKNOWLEDGED_BY, NOTE),
)
# One step of a command's or a desired state's life; see `commands.py`. Each point carries
# only the fields that apply to its step; args, output, from, to and state are JSON text;
# created, expires and device_ts are ns; device and raw_name keep what an `_unknown` tag hides.
COMMANDS = Measurement(
    "moclo_commands",
    tags=(DEVICE_ID, DEVICE_TYPE, KIND, "name", "status", TENANT),
    fields=(
        "id", "issuer", "account", REASON, "args", "output", "from", "to", STATE, "created",
        "expires", "device_ts", "version", "device", "raw_name", "alert", "trigger",
        "request_id",
    ),
)  # fmt: skip
# A notification's step: queued, held, sent, failed, escalated, …; see `notifications.py`.
NOTIFICATIONS = Measurement(
    "moclo_notifications",
    tags=("event", TENANT),
    fields=(
        ALERT_ID, DEVICE_ID, RULE, "person", "channel", "level", "message_id", "detail",
    ),
)  # fmt: skip
MEASUREMENTS = (READINGS, REJECTED, UNREGISTERED, ALERTS, COMMANDS, NOTIFICATIONS)
