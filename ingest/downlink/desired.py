"""A person's (or an automation's) change of a device's desired state (`desired-requests`),
checked as a command request is (ingest/downlink/requests.py: who asks, the role, the device,
the clearance), then against the type's `DesiredSpec`: a request changes the settings it names
and keeps the others. Each change is the next version of the device's document, above the
highest version known from any source (ledger.py), recorded with who asked, from what, to what
(and for an automation, why), sent whole to the device and announced on command-status, with
the asker's `request_id` echoed so overlapping requests are told apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from devices.commands import CommandUpdate, DesiredRequest, desired_command_id
from devices.topics import DESIRED_REQUESTS, TopicError, check_identifier, parse_requester
from ingest.decode import RejectReason, describe_validation_error
from ingest.downlink.askers import Asker, Refusal, check_clearance, device_of, who_asks
from ingest.downlink.base import GatewayBase
from ingest.downlink.ledger import Cause, Desired
from ingest.downlink.outcome import REQUEST_TAG, Incoming, Outcome, loads_object, stamp
from ingest.downlink.requests import refuse, unreadable
from storage.commands import CommandEvent


def desired_request(gateway: GatewayBase, tenant: str, message: Incoming, out: Outcome) -> None:
    raw: dict[str, Any] | None = None
    try:
        check_identifier("tenant", tenant)
        account, on_behalf = parse_requester(
            gateway.prefix, tenant, DESIRED_REQUESTS, message.topic
        )
        raw = loads_object(message.payload)
        body = DesiredRequest.model_validate(raw)
    except (TopicError, ValueError) as exc:
        error = unreadable(exc, 'a desired-state request is {"device", "state": {...}}')
        gateway.reject(RejectReason.BAD_DESIRED_REQUEST, tenant, REQUEST_TAG, message, error, out)
        return
    submit_desired(
        gateway,
        tenant,
        body,
        lambda: who_asks(gateway, tenant, account, on_behalf, body.by, body.role),
        account,
        out,
    )


def submit_desired(
    gateway: GatewayBase,
    tenant: str,
    body: DesiredRequest,
    asking: Callable[[], Asker],
    account: str,
    out: Outcome,
    cause: Cause | None = None,
) -> None:
    """Checks a readable desired-state request and sends the new document, or refuses it
    saying why; `asking` says who asks (Refusal if nobody may); `cause`: an automation's
    alert change."""
    current = gateway.ledger.desired.get((tenant, body.device))
    asker: Asker | None = None
    device_type: str | None = None
    try:
        asker = asking()
        device_type = device_of(gateway, tenant, body.device)
        spec = gateway.catalogue[device_type].desired
        if spec is None:
            raise Refusal(f"a {device_type} has no desired state; send it commands instead")
        check_clearance(spec.clearance, asker, f"the desired state of a {device_type}", tenant)
        if current is not None and current.device_type != device_type:
            # The id now names a device of another type: its settings start afresh, and the
            # versions go on (a device never gets a version it may have applied before).
            current = Desired(device_type, current.version, {}, 0, current.issuer, current.version)
        if not body.state:
            raise Refusal("state is empty: name at least one setting to change")
        try:
            checked = spec.state.model_validate(body.state).model_dump(mode="json")
        except ValidationError as exc:
            raise Refusal(f"desired state: {describe_validation_error(exc)}") from None
        if current is None and all(checked[name] is None for name in body.state):
            raise Refusal("nothing to set: every field is null, and no desired state was set")
    except Refusal as refusal:
        suffix = f"-desired-refused-{gateway.clock() // 1_000_000}"  # an id is 64 at most
        refused_id = body.device[: 64 - len(suffix)] + suffix
        refuse(
            gateway, tenant, "desired", refused_id, body.device, device_type, "desired",
            str(refusal), asker, account, out, args=body.state, request_id=body.request_id,
        )  # fmt: skip
        return
    changes = {name: checked[name] for name in body.state}
    before = current or Desired(device_type, 0, {}, 0)
    state = {k: v for k, v in {**before.state, **changes}.items() if v is not None}
    if state == before.state and current is not None:
        _nothing_new(gateway, tenant, body, current, asker, out)
        return
    desired = Desired(
        before.device_type, gateway.ledger.next_version(tenant, body.device), state,
        gateway.stamp(), asker.issuer, before.confirmed, cause, body.request_id or "",
    )  # fmt: skip
    from_state = {name: before.state.get(name) for name in changes}
    send_version(gateway, tenant, body.device, desired, out, account=asker.account,
                 from_state=from_state, to_state=changes)  # fmt: skip


def _nothing_new(
    gateway: GatewayBase,
    tenant: str,
    body: DesiredRequest,
    current: Desired,
    asker: Asker,
    out: Outcome,
) -> None:
    """The asker hears that the current version already says so. Not applied yet, it is sent
    again (as a command asked again is): the request may be coming again because a crash came
    between recording it and sending it."""
    reason = f"nothing to change: version {current.version} (by {current.issuer}) says so"
    announce_desired(gateway, tenant, body.device, current, out, asker.issuer, reason,
                     request_id=body.request_id)  # fmt: skip
    if current.confirmed < current.version:
        gateway.send_desired(tenant, body.device, current, out)


def send_version(
    gateway: GatewayBase,
    tenant: str,
    device_id: str,
    desired: Desired,
    out: Outcome,
    *,
    account: str = "",
    reason: str = "",
    from_state: dict[str, Any] | None = None,
    to_state: dict[str, Any] | None = None,
) -> None:
    """Makes `desired` the device's document: records it, sends it whole, announces it."""
    gateway.ledger.desired[(tenant, device_id)] = desired
    gateway.ledger.know_version(tenant, device_id, desired.version)
    event = CommandEvent(
        tenant, desired.device_type, device_id, "desired", "desired", "sent",
        desired_command_id(device_id, desired.version), desired.ts_ns, desired.issuer, account,
        reason, from_state=from_state, to_state=to_state, state=desired.state,
        version=desired.version, alert=desired.cause.alert if desired.cause else "",
        trigger=desired.cause.trigger if desired.cause else "", request_id=desired.request_id,
    )  # fmt: skip
    out.lines.append(event.to_line())
    gateway.unapplied.sent(tenant, desired.device_type, device_id, desired.version, desired.ts_ns)
    gateway.send_desired(tenant, device_id, desired, out)
    announce_desired(gateway, tenant, device_id, desired, out)


def announce_desired(
    gateway: GatewayBase,
    tenant: str,
    device_id: str,
    desired: Desired,
    out: Outcome,
    issuer: str | None = None,
    reason: str | None = None,
    *,
    request_id: str | None = None,
) -> None:
    """`sent`, or `succeeded` once the device reported that version (or a later one); for
    `issuer` (who asked, if not who set that version), with `reason`."""
    update = CommandUpdate(
        id=desired_command_id(device_id, desired.version),
        device=device_id,
        device_type=desired.device_type,
        name="desired",
        status="succeeded" if desired.confirmed >= desired.version else "sent",
        reason=reason,
        issuer=issuer or desired.issuer,
        alert=desired.cause.alert if desired.cause and not issuer else None,
        trigger=desired.cause.trigger if desired.cause and not issuer else None,
        request_id=request_id or (desired.request_id or None if not issuer else None),
        ts=stamp(gateway.clock()),
    )
    gateway.publish_update(tenant, update, out)
