"""What devices send on the downlink's uplink levels: an answer to a command (`command-results`),
"send me what I missed" (`commands/get`, `desired/get`) and the state they applied
(`reported`). The topic says which device speaks (the broker lets a device write only its
own), so a device can answer only commands sent to itself.
"""

from __future__ import annotations

from dataclasses import replace

import orjson
from pydantic import ValidationError

from devices.commands import CommandResult, ReportedDocument, desired_command_id
from devices.topics import (
    COMMAND_RESULTS,
    COMMANDS_GET,
    DESIRED_GET,
    DeviceAddress,
    TopicError,
    parse_device_uplink,
)
from ingest.decode import RejectReason, describe_validation_error
from ingest.downlink.base import GatewayBase
from ingest.downlink.desired import announce_desired, send_version
from ingest.downlink.ledger import Desired
from ingest.downlink.outcome import Incoming, Outcome
from storage.commands import CommandEvent


def device_message(gateway: GatewayBase, message: Incoming, out: Outcome) -> None:
    try:
        address, level = parse_device_uplink(gateway.prefix, message.topic)
    except TopicError as exc:
        gateway.reject_unread(message, out, str(exc))
        return
    if address.device_type not in gateway.catalogue:
        known = ", ".join(sorted(gateway.catalogue))
        gateway.reject_unread(
            message, out, f"unknown device type {address.device_type!r}; known: {known}"
        )
        return
    if level == COMMAND_RESULTS:
        _result(gateway, address, message, out)
    elif level == COMMANDS_GET:
        key = (address.tenant, address.device_type, address.device_id)
        if gateway.asked_again.ask(key, gateway.clock()):  # else answered when its window ends
            gateway.send_pending(*key, out)
    elif level == DESIRED_GET:
        desired = gateway.ledger.desired.get((address.tenant, address.device_id))
        if desired is None or desired.device_type != address.device_type:
            # Nothing set yet (for a device of this type): version 0, empty, so the device
            # knows rather than waits.
            desired = Desired(address.device_type, 0, {}, gateway.clock())
        gateway.send_desired(address.tenant, address.device_id, desired, out)
    else:
        _reported(gateway, address, message, out)


def _result(gateway: GatewayBase, address: DeviceAddress, message: Incoming, out: Outcome) -> None:
    try:
        result = CommandResult.model_validate_json(message.payload)
    except ValidationError as exc:
        error = 'a command result is {"id", "status", "reason", "output", "ts"}: ' + (
            describe_validation_error(exc)
        )
        _bad_result(gateway, address, message, error, out)
        return
    try:  # valid JSON that moclo cannot write back (an integer beyond 64 bits), refused whole
        orjson.dumps(result.output)
    except orjson.JSONEncodeError as exc:
        _bad_result(gateway, address, message, f"output: {exc}", out)
        return
    entry = gateway.ledger.get(address.tenant, result.id)
    if entry is None or (entry.device_id, entry.device_type) != (
        address.device_id,
        address.device_type,
    ):
        error = f"no command {result.id!r} was sent to this device: nothing to answer"
        gateway.reject(
            RejectReason.BAD_COMMAND_RESULT, address.tenant, address.device_type, message,
            error, out,
        )  # fmt: skip
        return
    if result.status == entry.status or (entry.final and result.status == "accepted"):
        return  # the same answer again (a repeated delivery), or a late "accepted": nothing new
    status, reason, output = result.status, result.reason or "", result.output
    spec = gateway.catalogue[entry.device_type].command(entry.name)
    if status == "succeeded" and spec.output is not None:
        try:
            spec.output.model_validate(output or {})
        except ValidationError as exc:
            problem = describe_validation_error(exc)
            gateway.reject(
                RejectReason.BAD_COMMAND_RESULT, address.tenant, address.device_type, message,
                f"{entry.name} output: {problem}", out,
            )  # fmt: skip
            status, output = "failed", None
            reason = f"the device answered succeeded, but its {entry.name} report is invalid: "
            reason += problem
    gateway.settle(entry, status, reason, out, output=output, device_ts_ns=result.ts)


def _bad_result(
    gateway: GatewayBase, address: DeviceAddress, message: Incoming, error: str, out: Outcome
) -> None:
    """Recorded; and if it names a command of this device, the people waiting hear of it (the
    command stays as it was: the device may answer again, or the expiry settles it)."""
    gateway.reject(
        RejectReason.BAD_COMMAND_RESULT, address.tenant, address.device_type, message, error, out
    )
    try:
        named = orjson.loads(message.payload)
    except orjson.JSONDecodeError:
        return
    command_id = named.get("id") if isinstance(named, dict) else None
    entry = gateway.ledger.get(address.tenant, command_id) if isinstance(command_id, str) else None
    if entry is not None and entry.device_id == address.device_id:
        gateway.announce(entry, out, reason=f"the device answered something unreadable: {error}")


def _send_above(
    gateway: GatewayBase,
    tenant: str,
    device_id: str,
    desired: Desired,
    applied: int,
    out: Outcome,
) -> None:
    """The device applied a version above the document it was sent, which it will therefore
    ignore (moclo's records of its versions were lost): the same document again, as the
    version after the device's, still the change of whoever made it."""
    reason = (
        f"sent again as version {applied + 1}: the device reported version {applied}, newer "
        f"than moclo's {desired.version} (moclo's record of its versions was lost)"
    )
    again = replace(desired, version=gateway.ledger.next_version(tenant, device_id),
                    ts_ns=gateway.stamp())  # fmt: skip
    send_version(gateway, tenant, device_id, again, out, reason=reason)


def _reported(
    gateway: GatewayBase, address: DeviceAddress, message: Incoming, out: Outcome
) -> None:
    try:
        reported = ReportedDocument.model_validate_json(message.payload)
    except ValidationError as exc:
        error = 'a reported state is {"version", "state", "ts"}: ' + describe_validation_error(exc)
        gateway.reject(
            RejectReason.BAD_REPORTED, address.tenant, address.device_type, message, error, out
        )
        return
    tenant, device_id = address.tenant, address.device_id
    event = CommandEvent(
        tenant, address.device_type, device_id, "reported", "reported", "reported",
        desired_command_id(device_id, reported.version), gateway.stamp(),
        state=reported.state, version=reported.version, device_ts_ns=reported.ts,
    )  # fmt: skip
    out.lines.append(event.to_line())
    followed = gateway.ledger.know_reported(tenant, device_id, reported.version)
    desired = gateway.ledger.desired.get((tenant, device_id))
    if desired is None or desired.device_type != address.device_type:
        pass  # nothing wanted of this device: its version is noted, the next goes above it
    elif desired.confirmed < desired.version < reported.version and followed:
        _send_above(gateway, tenant, device_id, desired, reported.version, out)
    elif desired.confirmed < desired.version == reported.version:
        desired.confirmed = desired.version
        done = CommandEvent(
            tenant, desired.device_type, device_id, "desired", "desired", "succeeded",
            desired_command_id(device_id, desired.version), gateway.stamp(), desired.issuer,
            version=desired.version,
        )  # fmt: skip
        out.lines.append(done.to_line())
        announce_desired(gateway, tenant, device_id, desired, out)
    resolution = gateway.unapplied.applied(tenant, device_id, reported.version, gateway.clock())
    if resolution is not None:
        out.alerts.append(resolution)
