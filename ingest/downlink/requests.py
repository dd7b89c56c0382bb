"""A person's requests: a command (`command-requests`) here, or a change of desired state
(`desired-requests`, ingest/downlink/desired.py), checked in this order before anything
reaches a device:

1. who asks: the account the topic names, its role and tenant from the registry; on a serve
   account's `/on-behalf` topic, the person (`by`) and role serve signed in;
2. that role acts at all (viewers, apps and admins watch: they send nothing);
3. the device: registered in the topic's tenant (a device of another tenant is, here, a device
   that does not exist);
4. the command, in the device type's catalogue (or the type's desired state);
5. the clearance: `admits(spec.clearance, role)` (pacemakers: clinicians only);
6. the arguments (or settings), against the catalogue's model with its bounds.

The first that fails is the reason of the refusal, recorded and announced. A refused request
leaves its id free: fix what the reason says and ask again with the same id.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from devices.commands import (
    COMMAND_ID,
    CommandRequest,
    CommandUpdate,
)
from devices.topics import (
    COMMAND_REQUESTS,
    TopicError,
    check_identifier,
    is_identifier,
    parse_requester,
)
from ingest.decode import RejectReason, describe_validation_error
from ingest.downlink.askers import Asker, Refusal, check_clearance, device_of, who_asks
from ingest.downlink.base import GatewayBase
from ingest.downlink.ledger import Cause, Entry
from ingest.downlink.outcome import REQUEST_TAG, Incoming, Outcome, loads_object, stamp
from storage.commands import UNKNOWN_TAG, CommandEvent, Kind

log = logging.getLogger("moclo.ingest.downlink")


def command_request(gateway: GatewayBase, tenant: str, message: Incoming, out: Outcome) -> None:
    raw: dict[str, Any] | None = None
    try:
        check_identifier("tenant", tenant)
        account, on_behalf = parse_requester(
            gateway.prefix, tenant, COMMAND_REQUESTS, message.topic
        )
        raw = loads_object(message.payload)
        body = CommandRequest.model_validate(raw)
    except (TopicError, ValueError) as exc:
        error = unreadable(exc, 'a command request is {"id", "device", "name", "args"}')
        gateway.reject(RejectReason.BAD_COMMAND_REQUEST, tenant, REQUEST_TAG, message, error, out)
        if raw is not None:
            _refuse_unreadable(gateway, tenant, raw, error, out)
        return
    submit_command(
        gateway,
        tenant,
        body,
        lambda: who_asks(gateway, tenant, account, on_behalf, body.by, body.role),
        account,
        out,
        message,
    )


def submit_command(
    gateway: GatewayBase,
    tenant: str,
    body: CommandRequest,
    asking: Callable[[], Asker],
    account: str,
    out: Outcome,
    message: Incoming | None = None,
    cause: Cause | None = None,
) -> None:
    """Checks a readable command request and sends it, or refuses it saying why; `asking`
    says who asks (Refusal if nobody may), `message` is the request as it came, if it came
    over MQTT (an automation's does not, and has the alert change it acts on, `cause`)."""
    command_id = body.id or uuid.uuid4().hex
    known = gateway.ledger.get(tenant, command_id)
    if known is not None:
        _asked_again(gateway, known, body, asking, message, out)
        return
    asker: Asker | None = None
    device_type: str | None = None
    try:
        asker = asking()
        device_type = device_of(gateway, tenant, body.device)
        try:
            spec = gateway.catalogue[device_type].command(body.name)
        except KeyError as exc:
            raise Refusal(str(exc.args[0])) from None
        check_clearance(spec.clearance, asker, f"{spec.name} on a {device_type}", tenant)
        try:
            args = spec.arguments.model_validate(body.args).model_dump(mode="json")
        except ValidationError as exc:
            raise Refusal(f"{spec.name}: {describe_validation_error(exc)}") from None
    except Refusal as refusal:
        refuse(
            gateway, tenant, "command", command_id, body.device, device_type, body.name,
            str(refusal), asker, account, out, args=body.args,
        )  # fmt: skip
        return
    # The clock's time, not a stamp: stamps never go back, so after the clock was set back
    # (an hour fast, corrected) a stamp would give each command that much more life.
    created = gateway.clock()
    expiry_s = body.expires_in_s if body.expires_in_s is not None else spec.expiry_s
    entry = Entry(
        tenant, device_type, body.device, command_id, spec.name, args, asker.issuer,
        asker.account, created, created + int(expiry_s * 1e9), cause=cause,
    )  # fmt: skip
    gateway.ledger.add(entry)
    event = gateway.event(
        entry, "sent", account=asker.account, args=args,
        created_ns=entry.created_ns, expires_ns=entry.expires_ns,
    )  # fmt: skip
    out.lines.append(event.to_line())
    gateway.send_command(entry, out)
    gateway.announce(entry, out)


def refuse(
    gateway: GatewayBase,
    tenant: str,
    kind: Kind,
    command_id: str,
    device_id: str,
    device_type: str | None,
    name: str,
    reason: str,
    asker: Asker | None,
    account: str,
    out: Outcome,
    *,
    args: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> None:
    """Records a refusal and announces it on the device's command-status topic. What was not
    checked (a device that is not registered, a command the type lacks) is tagged `_unknown`
    and kept in a field, so invented names add no series."""
    known_name = device_type is not None and (
        name == "desired" or any(c.name == name for c in gateway.catalogue[device_type].commands)
    )
    raw = {}
    if device_type is None:
        raw["device"] = device_id[:200]
    if not known_name:
        raw["raw_name"] = name[:200]
    event = CommandEvent(
        tenant, device_type or UNKNOWN_TAG, device_id if device_type else UNKNOWN_TAG, kind,
        name if known_name else UNKNOWN_TAG, "refused", command_id, gateway.stamp(),
        asker.issuer if asker else account, account, reason, args=args, raw=raw,
        request_id=request_id or "",
    )  # fmt: skip
    out.lines.append(event.to_line())
    if is_identifier(device_id) and COMMAND_ID.fullmatch(command_id):
        update = CommandUpdate(
            id=command_id,
            device=device_id,
            device_type=device_type or UNKNOWN_TAG,
            name=name[:200],
            status="refused",
            reason=reason,
            issuer=event.issuer,
            request_id=request_id,
            ts=stamp(gateway.clock()),
        )
        gateway.publish_update(tenant, update, out)


def _asked_again(
    gateway: GatewayBase,
    known: Entry,
    body: CommandRequest,
    asking: Callable[[], Asker],
    message: Incoming | None,
    out: Outcome,
) -> None:
    """The same id again from the same asker, with the same arguments: the same command. Its
    status is announced again, and if the device has not answered yet, it is sent again (a
    device executes an id at most once). Anyone else's request under that id (a nurse reusing
    a clinician's), or other arguments, is another command: not sent, not answered as this."""
    problem = _not_the_same(gateway, known, body, asking)
    if problem is not None:
        error = (
            f"id {known.id!r} already names {known.name} to {known.device_id} asked by "
            f"{known.issuer} ({known.status}); this request was not sent: {problem}"
        )
        if message is None:  # an automation's: its ids are its own, so this is a bug
            log.error("%s", error)
            return
        gateway.reject(
            RejectReason.BAD_COMMAND_REQUEST, known.tenant, REQUEST_TAG, message, error, out
        )
        return
    if known.status == "sent" and known.expires_ns > gateway.clock():
        gateway.send_command(known, out)
    gateway.announce(known, out)


def _not_the_same(
    gateway: GatewayBase, known: Entry, body: CommandRequest, asking: Callable[[], Asker]
) -> str | None:
    """Why a request under a known id is not that command asked again, or None if it is."""
    if (known.device_id, known.name) != (body.device, body.name):
        return "give it an id of its own"
    try:
        asker = asking()
        spec = gateway.catalogue[known.device_type].command(known.name)
        check_clearance(spec.clearance, asker, f"{spec.name} on a {known.device_type}",
                        known.tenant)  # fmt: skip
    except (Refusal, KeyError) as refusal:  # KeyError: a command the catalogue dropped
        return str(refusal)
    if asker.issuer != known.issuer:
        return "the id is another person's: give yours an id of its own"
    try:
        args = spec.arguments.model_validate(body.args).model_dump(mode="json")
    except ValidationError:
        args = None
    if args != known.args:
        return "this request has other arguments: give it an id of its own"
    return None


def _refuse_unreadable(
    gateway: GatewayBase, tenant: str, raw: dict[str, Any], error: str, out: Outcome
) -> None:
    """A request that could not be read, announced as refused if it names its id and device
    (so a client waiting on that id hears why) and the id is not a command's already."""
    command_id, device = raw.get("id"), raw.get("device")
    if not (isinstance(command_id, str) and isinstance(device, str) and is_identifier(tenant)):
        return
    if not COMMAND_ID.fullmatch(command_id) or gateway.ledger.get(tenant, command_id):
        return
    name = raw.get("name") if isinstance(raw.get("name"), str) else UNKNOWN_TAG
    device_type = gateway.directory.device_type(tenant, device)
    args = raw.get("args") if isinstance(raw.get("args"), dict) else None
    refuse(
        gateway, tenant, "command", command_id, device,
        device_type if device_type in gateway.catalogue else None, str(name), error, None, "",
        out, args=args,
    )  # fmt: skip


def unreadable(exc: Exception, shape: str) -> str:
    if isinstance(exc, ValidationError):
        return f"{shape}: {describe_validation_error(exc)}"
    if isinstance(exc, TopicError):
        return str(exc)
    return f"{shape}: {exc}"
