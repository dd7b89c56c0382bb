"""One batch of messages → the lines to write and the alerts to send. Pure: no I/O here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from devices.topics import telemetry_topic
from ingest.alerts import Alert, AlertEngine
from ingest.decode import Decoded, Decoder, Rejection, RejectReason, ValidReading
from ingest.lineprotocol import reading_line, rejection_line
from ingest.rejections import RejectionLog
from ingest.source import Message


@dataclass(slots=True)
class PreparedBatch:
    lines: list[str] = field(default_factory=list)
    # origins[i] is the reading behind lines[i], or None for rejection and alert lines.
    origins: list[ValidReading | None] = field(default_factory=list)
    readings: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)


class Pipeline:
    def __init__(self, decoder: Decoder, engine: AlertEngine, rejections: RejectionLog) -> None:
        self.decoder = decoder
        self.engine = engine
        self.rejections = rejections
        self._last_rejection_ns = 0

    def prepare(self, messages: Sequence[Message]) -> PreparedBatch:
        decoded = Decoded()
        for message in messages:
            self.decoder.decode(message.topic, message.payload, message.received_ns, decoded)
        batch = PreparedBatch(readings=len(decoded.readings))
        for item in decoded.readings:
            batch.lines.append(reading_line(item))
            batch.origins.append(item)
            batch.alerts.extend(self.engine.evaluate(item))
        for alert in batch.alerts:
            batch.lines.append(alert.to_line())
            batch.origins.append(None)
        for rejection in decoded.rejections:
            self._add_rejection(batch, rejection)
        return batch

    def refused(self, item: ValidReading, error: str, received_ns: int) -> PreparedBatch:
        """A batch recording that InfluxDB refused a valid reading (e.g. a field type conflict)."""
        address = item.address
        batch = PreparedBatch()
        self._add_rejection(
            batch,
            Rejection(
                RejectReason.STORAGE_REFUSED,
                address.tenant,
                address.device_type,
                telemetry_topic(
                    self.decoder.prefix, address.tenant, address.device_type, address.device_id
                ),
                error,
                reading_line(item).encode()[:1024],
                received_ns,
            ),
        )
        return batch

    def _add_rejection(self, batch: PreparedBatch, rejection: Rejection) -> None:
        # Rejections are stamped with their arrival time; two in the same nanosecond with the
        # same tags would be one point, so each gets a strictly later stamp than the last.
        ts_ns = max(rejection.received_ns, self._last_rejection_ns + 1)
        self._last_rejection_ns = ts_ns
        batch.lines.append(rejection_line(rejection, ts_ns))
        batch.origins.append(None)
        batch.rejections.append(rejection)
        self.rejections.record(rejection)
