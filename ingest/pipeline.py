"""One batch of messages → the lines to write and the alerts to send. Pure: no I/O here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from devices.topics import DeviceAddress, telemetry_topic
from ingest.alerts import Alert, AlertEngine
from ingest.cardinality import CardinalityGuard
from ingest.decode import Decoded, Decoder, Rejection, RejectReason, ValidReading
from ingest.lineprotocol import parse_reading_address, reading_line, rejection_line
from ingest.rejections import RejectionLog
from ingest.source import Message

KEEP_BYTES = 1024


@dataclass(slots=True)
class PreparedBatch:
    lines: list[str] = field(default_factory=list)
    readings: int = 0  # how many of `lines` are readings
    rejections: list[Rejection] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)


class Pipeline:
    def __init__(
        self,
        decoder: Decoder,
        engine: AlertEngine,
        rejections: RejectionLog,
        guard: CardinalityGuard,
    ) -> None:
        self.decoder = decoder
        self.engine = engine
        self.rejections = rejections
        self.guard = guard
        self._last_rejection_ns = 0

    def prepare(self, messages: Sequence[Message]) -> PreparedBatch:
        decoded = Decoded()
        for message in messages:
            self.decoder.decode(message.topic, message.payload, message.received_ns, decoded)
        batch = PreparedBatch()
        for item, received_ns in zip(decoded.readings, decoded.received_ns, strict=True):
            if not self.guard.admit(item.address, received_ns):
                self._add_rejection(batch, self._over_cardinality(item, received_ns))
                continue
            batch.readings += 1
            batch.lines.append(reading_line(item))
            batch.alerts.extend(self.engine.evaluate(item))
        batch.lines.extend(alert.to_line() for alert in batch.alerts)
        for rejection in decoded.rejections:
            self._add_rejection(batch, rejection)
        return batch

    def refused(self, line: str, error: str, received_ns: int) -> PreparedBatch | None:
        """A batch recording that InfluxDB refused a reading line (e.g. a field type conflict).

        None when the line is not a reading: our own rejection and alert lines are built from
        validated values, so InfluxDB refusing one is a bug for the log, not a device's fault.
        """
        address = parse_reading_address(line)
        if address is None:
            return None
        batch = PreparedBatch()
        self._add_rejection(
            batch,
            Rejection(
                RejectReason.STORAGE_REFUSED,
                address.tenant,
                address.device_type,
                self._topic(address),
                error,
                line.encode()[:KEEP_BYTES],
                received_ns,
            ),
        )
        return batch

    def _over_cardinality(self, item: ValidReading, received_ns: int) -> Rejection:
        address = item.address
        return Rejection(
            RejectReason.CARDINALITY_LIMIT,
            address.tenant,
            address.device_type,
            self._topic(address),
            f"tenant {address.tenant!r} is adding new devices faster "
            "than the cardinality guard allows; this new device's readings are refused until "
            "it is admitted",
            reading_line(item).encode()[:KEEP_BYTES],
            received_ns,
        )

    def _topic(self, a: DeviceAddress) -> str:
        return telemetry_topic(self.decoder.prefix, a.tenant, a.device_type, a.device_id)

    def _add_rejection(self, batch: PreparedBatch, rejection: Rejection) -> None:
        # Rejections are stamped with their arrival time; two in the same nanosecond with the
        # same tags would be one point, so each gets a strictly later stamp than the last.
        ts_ns = max(rejection.received_ns, self._last_rejection_ns + 1)
        self._last_rejection_ns = ts_ns
        batch.lines.append(rejection_line(rejection, ts_ns))
        batch.rejections.append(rejection)
        self.rejections.record(rejection)
