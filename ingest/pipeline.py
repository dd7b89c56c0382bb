"""One batch of messages → the lines to write and the alerts to send. Pure: no I/O here.

Telemetry is decoded, validated and judged by the alert engine; acknowledgements of alerts
(`{prefix}/{tenant}/acks/{account}`) go to the engine too, as acknowledged by the account the
topic names (the broker's ACL lets an account write only its own), or, on a serve account's
`{prefix}/{tenant}/acks/{account}/on-behalf`, by the person serve names in the payload's `by`.
Whatever cannot be used becomes a rejection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from devices.fast import AnyReading
from devices.topics import (
    IDENTIFIER_RULE,
    DeviceAddress,
    TopicError,
    is_identifier,
    parse_acknowledgement_topic,
    parse_acknowledger,
    telemetry_topic,
)
from ingest.alerts import AcknowledgementInvalid, AcknowledgementRepeated, AlertEngine
from ingest.announce import Publication
from ingest.automations.runner import Automations
from ingest.cardinality import CardinalityGuard
from ingest.decode import (
    INVALID_TAG,
    Decoded,
    Decoder,
    Rejection,
    RejectReason,
    ValidReading,
    describe_validation_error,
)
from ingest.downlink.gateway import Gateway
from ingest.downlink.outcome import Incoming, Outcome
from ingest.rejections import RejectionLog
from ingest.source import Message
from storage.alert_record import Alert
from storage.influx import is_beyond_retention
from storage.lineprotocol import (
    RunFormatter,
    parse_reading_address,
    reading_head,
    reading_line,
    reading_run_formatter,
    rejection_line,
)

KEEP_BYTES = 1024


@dataclass(slots=True)
class PreparedBatch:
    lines: list[str] = field(default_factory=list)
    readings: int = 0  # how many of `lines` are readings
    rejections: list[Rejection] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    # Downlink messages to send once `lines` are stored (ingest/downlink/).
    publications: list[Publication] = field(default_factory=list)


class _AcknowledgementBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(pattern=r"^[0-9a-f]{12}$")
    # Believed only on a serve account's on-behalf topic; elsewhere the topic says who.
    by: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$"
    )
    note: str = Field(default="", max_length=500)


def _acknowledger(account: str, on_behalf: bool, body: _AcknowledgementBody) -> tuple[str, str]:
    """(who acknowledged, the note to store) for an acknowledgement sent by `account`.

    A `by` that names someone else on an account's own topic is kept in the note, marked as
    not verified, rather than refused: a team sharing one operator login may still say who
    of them is on it, and an acknowledgement is not lost for a field nobody checks."""
    if on_behalf:
        if body.by is None:
            raise AcknowledgementInvalid(
                f'an acknowledgement on the on-behalf topic of {account!r} names the person in "by"'
            )
        return body.by, body.note
    if body.by is None or body.by == account:
        return account, body.note
    claim = f"(the message said by {body.by!r}; not verified)"
    return account, f"{body.note} {claim}" if body.note else claim


class Pipeline:
    def __init__(
        self,
        decoder: Decoder,
        engine: AlertEngine,
        rejections: RejectionLog,
        guard: CardinalityGuard,
        gateway: Gateway | None = None,
        automations: Automations | None = None,
    ) -> None:
        self.decoder = decoder
        self.engine = engine
        self.rejections = rejections
        self.guard = guard
        self.gateway = gateway  # None: no downlink (a share group member stores readings only)
        self.automations = automations  # they act through the gateway, so only with one
        self._last_rejection_ns = 0

    def prepare(self, messages: Sequence[Message]) -> PreparedBatch:
        decoded = Decoded()
        batch = PreparedBatch()
        acknowledgements: list[tuple[str, Message]] = []
        for message in messages:
            tenant = parse_acknowledgement_topic(self.decoder.prefix, message.topic)
            if tenant is not None:
                acknowledgements.append((tenant, message))
                continue
            # Telemetry, or the downlink: the decoder hands those on in `decoded.downlink`.
            self.decoder.decode(message.topic, message.payload, message.received_ns, decoded)
        self._store_readings(decoded, batch)
        # After the readings: an acknowledgement names an alert that was raised before it was
        # sent, possibly by a reading in this same batch.
        for tenant, message in acknowledgements:
            self._acknowledge(tenant, message, batch)
        if decoded.downlink and self.gateway is not None:
            outcome = Outcome()
            for topic, payload, received_ns in decoded.downlink:
                self.gateway.handle(Incoming(topic, payload, received_ns), outcome)
            self.add_downlink(batch, outcome)
        self.react(batch)
        batch.lines.extend(alert.to_line() for alert in batch.alerts)
        for rejection in decoded.rejections:
            self._add_rejection(batch, rejection)
        return batch

    def _store_readings(self, decoded: Decoded, batch: PreparedBatch) -> None:
        """Each valid reading's line and alert changes, or its rejection by the cardinality
        guard. The readings of one message come in a run with one address object: its tags
        are formatted once, a device once admitted stays admitted, so it is asked once, and the
        run's lines are made together (`reading_run_formatter`: its floats in one call)."""
        lines, alerts, evaluate = batch.lines, batch.alerts, self.engine.evaluate
        address: DeviceAddress | None = None
        head, admitted, refused = "", False, 0
        kind: type[AnyReading] | None = None  # the type of the readings in `run`
        run: list[AnyReading] = []  # admitted readings of one device and type, in order
        formatter: RunFormatter | None = None  # the lines of a run of `kind`
        for item, received_ns in zip(decoded.readings, decoded.received_ns, strict=True):
            reading = item.reading
            if item.address is not address or type(reading) is not kind:
                if run and formatter is not None:
                    lines += formatter(head, run)
                    run = []
                if type(reading) is not kind:
                    kind = type(reading)
                    formatter = reading_run_formatter(kind)
                if item.address is not address:
                    address = item.address
                    head = reading_head(address)
                    admitted = False
            if not admitted and not (admitted := self.guard.admit(item.address, received_ns)):
                self._add_rejection(batch, self._over_cardinality(item, received_ns))
                refused += 1
                continue
            run.append(reading)
            if changes := evaluate(item):
                alerts.extend(changes)
        if run and formatter is not None:
            lines += formatter(head, run)
        batch.readings += len(decoded.readings) - refused

    def add_downlink(self, batch: PreparedBatch, outcome: Outcome) -> None:
        """Adds what the gateway decided to `batch`: lines, messages to send, rejections."""
        batch.lines.extend(outcome.lines)
        batch.publications.extend(outcome.publications)
        batch.alerts.extend(outcome.alerts)  # their lines are added with the batch's others
        for rejection in outcome.rejections:
            self._add_rejection(batch, rejection)

    def react(self, batch: PreparedBatch) -> None:
        """What the automations do about the batch's alert changes: the gateway's lines and
        messages, added to the batch (ingest/automations/)."""
        if self.automations is None or self.gateway is None or not batch.alerts:
            return
        outcome = Outcome()
        self.automations.react(batch.alerts, self.gateway, outcome)
        batch.lines.extend(outcome.lines)
        batch.publications.extend(outcome.publications)
        for rejection in outcome.rejections:
            self._add_rejection(batch, rejection)

    def sweep(self) -> PreparedBatch:
        """Alerts for devices that have gone silent (judged by the clock, not a reading)."""
        batch = PreparedBatch(alerts=self.engine.sweep())
        self.react(batch)
        batch.lines.extend(alert.to_line() for alert in batch.alerts)
        return batch

    def _acknowledge(self, tenant: str, message: Message, batch: PreparedBatch) -> None:
        shape = 'an acknowledgement is {"id": "<alert id>", "note": "…"}'
        try:
            if not is_identifier(tenant):
                raise AcknowledgementInvalid(
                    f"tenant {tenant!r} in the topic must match {IDENTIFIER_RULE}"
                )
            account, on_behalf = parse_acknowledger(self.decoder.prefix, tenant, message.topic)
            body = _AcknowledgementBody.model_validate(orjson.loads(message.payload))
            by, note = _acknowledger(account, on_behalf, body)
            alert = self._acknowledge_alert(tenant, body.id, by, note, message.received_ns)
        except AcknowledgementRepeated:
            return  # a double click, or on the engine a copy forwarded again: nothing to do
        except (orjson.JSONDecodeError, ValidationError, AcknowledgementInvalid, TopicError) as exc:
            if isinstance(exc, AcknowledgementInvalid | TopicError):
                error = str(exc)
            elif isinstance(exc, ValidationError):
                error = f"{shape}: {describe_validation_error(exc)}"
            else:
                error = f"{shape}: not JSON ({exc})"
            self.refuse_acknowledgement(tenant, message, error, batch)
            return
        batch.alerts.append(alert)

    def refuse_acknowledgement(
        self, tenant: str, message: Message, error: str, batch: PreparedBatch
    ) -> None:
        """Records why an acknowledgement was not taken (`bad_ack` in moclo_rejected)."""
        self._add_rejection(
            batch,
            Rejection(
                RejectReason.BAD_ACKNOWLEDGEMENT,
                tenant if is_identifier(tenant) else INVALID_TAG,
                "_ack",  # the stored device_type tag of these rejections: contract, kept
                message.topic,
                error,
                message.payload[:KEEP_BYTES],
                message.received_ns,
            ),
        )

    def _acknowledge_alert(
        self, tenant: str, alert: str, by: str, note: str, received_ns: int
    ) -> Alert:
        """The engine's alerts, then the gateway's (desired_not_applied)."""
        try:
            return self.engine.acknowledge(tenant, alert, by, note)
        except AcknowledgementRepeated:
            raise
        except AcknowledgementInvalid:
            gateway = self.gateway
            found = gateway and gateway.unapplied.acknowledge(tenant, alert, by, note, received_ns)
            if not found:
                raise
            return found

    def refused(self, line: str, error: str, received_ns: int) -> PreparedBatch | None:
        """A batch recording that InfluxDB refused a reading line: `beyond_retention` when it
        was older than the database keeps, else `storage_refused` (e.g. a field type conflict).

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
                RejectReason.BEYOND_RETENTION
                if is_beyond_retention(error)
                else RejectReason.STORAGE_REFUSED,
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
