"""The command gateway's state and the steps its handlers (requests.py, devices.py) share:
stamping, recording, announcing, sending to a device, rejecting. `Gateway` (gateway.py) adds
the handling of one message, which dispatches to those handlers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from devices.catalogue import DEVICE_TYPES
from devices.commands import Command, CommandUpdate, DesiredDocument
from devices.rfc3339 import format_us
from devices.topics import (
    COMMAND_REQUESTS,
    COMMANDS,
    DESIRED,
    DESIRED_REQUESTS,
    command_status_topic,
    device_topic,
    is_identifier,
)
from devices.types import DeviceType
from ingest.announce import Publication
from ingest.decode import INVALID_TAG, UNKNOWN_TYPE_TAG, Rejection, RejectReason
from ingest.downlink.asked_again import AskedAgain
from ingest.downlink.directory import Directory
from ingest.downlink.ledger import Desired, Entry, Ledger
from ingest.downlink.outcome import (
    KEEP_BYTES,
    REQUEST_TAG,
    Incoming,
    Outcome,
    stamp,
    to_wire,
)
from ingest.downlink.unapplied import Unapplied
from storage.commands import CommandEvent, CommandState, DesiredState

log = logging.getLogger("moclo.ingest.downlink")

# A device's `commands/get` is answered at once, then at most once per this many seconds
# (ingest/downlink/asked_again.py): a device that asks often gets its pending commands once
# a window, not once an ask.
COMMANDS_GET_EVERY_S = 3.0


class GatewayBase:
    """The gateway's state (the ledger, the registry's view, the clock) and the steps its
    handlers share; `Gateway` (gateway.py) adds the handling of messages."""

    def __init__(
        self,
        prefix: str,
        directory: Directory,
        *,
        catalogue: Mapping[str, DeviceType] = DEVICE_TYPES,
        clock: Callable[[], int] = time.time_ns,
        desired_grace_s: float = 600.0,
        commands_get_every_s: float = COMMANDS_GET_EVERY_S,
    ) -> None:
        self.prefix = prefix
        self.directory = directory
        self.catalogue = catalogue
        self.clock = clock
        self.ledger = Ledger()
        self.unapplied = Unapplied(desired_grace_s)
        self.asked_again = AskedAgain(int(commands_get_every_s * 1e9))
        self._last_ns = 0

    def restore(
        self,
        commands: list[CommandState],
        desired: list[DesiredState],
        reported: dict[tuple[str, str], int] | None = None,
    ) -> None:
        self.ledger.restore(commands, desired, reported)
        for d in desired:
            kept = self.ledger.desired.get((d.tenant, d.device_id))
            if kept is None or kept.device_type != d.device_type:
                continue  # an earlier device of this id (another type)
            if d.confirmed_version < d.version:  # not applied yet: the grace runs from then
                self.unapplied.sent(d.tenant, d.device_type, d.device_id, d.version, d.ts_ns)

    def expire(self, out: Outcome) -> None:
        """Marks `expired` each command whose expiry passed without a final answer."""
        now = self.clock()
        for entry in self.ledger.due(now):
            self.settle(entry, "expired", "no final answer from the device before the command "
                        f"expired ({format_us(entry.expires_ns)})", out)  # fmt: skip
        self.ledger.forget_old(now)
        out.alerts += self.unapplied.due(now)
        for tenant, device_type, device_id in self.asked_again.due(now):
            self.send_pending(tenant, device_type, device_id, out)

    def next_expiry_ns(self) -> int | None:
        """When `expire` next has something to do: an expiry, or a held `commands/get`."""
        due = [self.ledger.next_expiry_ns(), self.asked_again.next_due_ns()]
        return min((d for d in due if d is not None), default=None)

    def send_pending(self, tenant: str, device_type: str, device_id: str, out: Outcome) -> None:
        """Every pending command of the device, sent again (its answer to `commands/get`); one
        past its expiry is settled as expired instead (the sweep would do it within a second)."""
        now = self.clock()
        for entry in self.ledger.pending_of(tenant, device_id):
            if entry.device_type != device_type:
                continue
            if entry.expires_ns <= now:
                self.settle(entry, "expired", "no final answer before the command expired", out)
            else:
                self.send_command(entry, out)

    # -- what the handlers share -------------------------------------------------------------

    def stamp(self) -> int:
        """Now, strictly later than any stamp before: two steps never share a point."""
        self._last_ns = max(self.clock(), self._last_ns + 1)
        return self._last_ns

    def settle(
        self,
        entry: Entry,
        status: str,
        reason: str,
        out: Outcome,
        *,
        output: dict[str, Any] | None = None,
        device_ts_ns: int | None = None,
    ) -> None:
        """Records and announces a command's new status."""
        self.ledger.settle(entry, status, reason)
        entry.output = output if output is not None else entry.output
        event = self.event(entry, status, reason=reason, output=output)
        if device_ts_ns is not None:
            event = replace(event, device_ts_ns=device_ts_ns)
        out.lines.append(event.to_line())
        self.announce(entry, out)

    def event(self, entry: Entry, status: str, **fields: Any) -> CommandEvent:
        if entry.cause is not None:
            fields.update(alert=entry.cause.alert, trigger=entry.cause.trigger)
        return CommandEvent(
            tenant=entry.tenant,
            device_type=entry.device_type,
            device_id=entry.device_id,
            kind="command",
            name=entry.name,
            status=status,
            id=entry.id,
            ts_ns=self.stamp(),
            issuer=entry.issuer,
            **fields,
        )

    def announce(self, entry: Entry, out: Outcome, *, reason: str | None = None) -> None:
        """Publishes a command's current status on its device's command-status topic."""
        self.publish_update(
            entry.tenant,
            CommandUpdate(
                id=entry.id,
                device=entry.device_id,
                device_type=entry.device_type,
                name=entry.name,
                status=entry.status,  # type: ignore[arg-type]
                reason=reason if reason is not None else entry.reason or None,
                output=entry.output,
                issuer=entry.issuer,
                alert=entry.cause.alert if entry.cause else None,
                trigger=entry.cause.trigger if entry.cause else None,
                ts=stamp(self.clock()),
            ),
            out,
        )

    def publish_update(self, tenant: str, update: CommandUpdate, out: Outcome) -> None:
        topic = command_status_topic(self.prefix, tenant, update.device)
        out.publications.append(Publication(topic, to_wire(update, "ts")))

    def send_command(self, entry: Entry, out: Outcome) -> None:
        command = Command.model_validate(
            {
                "id": entry.id,
                "name": entry.name,
                "args": entry.args,
                "issuer": entry.issuer,
                "created": format_us(entry.created_ns),
                "expires": format_us(entry.expires_ns),
            }
        )
        topic = device_topic(
            self.prefix, entry.tenant, entry.device_type, entry.device_id, COMMANDS
        )
        out.publications.append(Publication(topic, to_wire(command, "created", "expires")))

    def send_desired(self, tenant: str, device_id: str, desired: Desired, out: Outcome) -> None:
        """The whole document, retained as a convenience (a device asks with desired/get)."""
        document = DesiredDocument.model_validate(
            {"version": desired.version, "state": desired.state, "ts": stamp(desired.ts_ns)}
        )
        topic = device_topic(self.prefix, tenant, desired.device_type, device_id, DESIRED)
        out.publications.append(
            Publication(topic, to_wire(document, "ts"), retain=desired.version > 0)
        )

    def reject(
        self,
        reason: RejectReason,
        tenant: str,
        device_type: str,
        message: Incoming,
        error: str,
        out: Outcome,
    ) -> None:
        out.rejections.append(
            Rejection(
                reason,
                tenant if is_identifier(tenant) else INVALID_TAG,
                device_type if device_type in self.catalogue or device_type == REQUEST_TAG
                else UNKNOWN_TYPE_TAG,
                message.topic,
                error,
                message.payload[:KEEP_BYTES],
                message.received_ns,
            )
        )  # fmt: skip

    def reject_unread(self, message: Incoming, out: Outcome, error: str) -> None:
        """A message refused before it was parsed; the reason follows from its topic."""
        parts = message.topic[len(self.prefix) + 1 :].split("/")
        tenant = parts[0] if parts else INVALID_TAG
        level = parts[1] if len(parts) > 1 else ""
        if level in (COMMAND_REQUESTS, DESIRED_REQUESTS):
            reason = (
                RejectReason.BAD_COMMAND_REQUEST
                if level == COMMAND_REQUESTS
                else RejectReason.BAD_DESIRED_REQUEST
            )
            self.reject(reason, tenant, REQUEST_TAG, message, error, out)
            return
        reason = (
            RejectReason.BAD_REPORTED
            if message.topic.endswith("/reported")
            else RejectReason.BAD_COMMAND_RESULT
        )
        self.reject(reason, tenant, level, message, error, out)
