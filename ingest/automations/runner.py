"""Automations at work: each alert change a batch produced is matched against the automations
file, and a match becomes a command, a desired-state change or a notice.

Commands and desired states go through the gateway's own checks (ingest/downlink/requests.py:
the device registered in the tenant, the catalogue, the clearance, the arguments) as if an
operator had asked, issued by `automation NAME`, and are recorded and sent like any other. A
command's id is made from the automation's name and the alert change (its alert id and
state), so a change that is judged again (its readings delivered again after a crash) is the
same command, which the gateway executes once, also across restarts. A notice is recorded in
`moclo_commands` (kind `notice`) and published on `{prefix}/{tenant}/notices/{device}`.

Matching costs one dict lookup per alert change; readings that change no alert cost nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from devices.commands import CommandRequest, DesiredRequest, Notice
from devices.topics import notice_topic
from ingest.announce import Publication
from ingest.automations.file import (
    ROLE,
    Automation,
    CommandAction,
    DesiredAction,
    NoticeAction,
)
from ingest.downlink.askers import Asker
from ingest.downlink.base import GatewayBase
from ingest.downlink.desired import submit_desired
from ingest.downlink.ledger import Cause
from ingest.downlink.outcome import Outcome, stamp, to_wire
from ingest.downlink.requests import submit_command
from storage.alert_record import Alert
from storage.commands import CommandEvent

ACCOUNT = "automation"  # the `account` of what automations ask, in moclo_commands


def action_id(automation: Automation, alert: Alert) -> str:
    """The id of what `automation` does for this alert change: the same change, the same id."""
    return action_key(automation.name, alert.alert_id, alert.state)


def action_key(automation: str, alert_id: str, state: str) -> str:
    """`action_id` from the names alone: how a reader (the dashboard's map) finds what the
    automation called `automation` did about an alert's change to `state`."""
    key = f"{automation}\0{alert_id}\0{state}".encode()
    return f"auto-{hashlib.sha256(key).hexdigest()[:24]}"


class Automations:
    def __init__(self, automations: Sequence[Automation]) -> None:
        self.automations = tuple(automations)
        self._by_trigger: dict[tuple[str, str, str], list[Automation]] = {}
        for automation in automations:
            if automation.enabled:
                key = (automation.tenant, automation.device_type, automation.rule)
                self._by_trigger.setdefault(key, []).append(automation)

    @property
    def enabled(self) -> int:
        return sum(len(found) for found in self._by_trigger.values())

    def react(self, alerts: Sequence[Alert], gateway: GatewayBase, out: Outcome) -> None:
        """Adds to `out` what the automations do about these alert changes."""
        for alert in alerts:
            found = self._by_trigger.get((alert.tenant, alert.device_type, alert.rule))
            for automation in found or ():
                if automation.matches(
                    alert.tenant, alert.device_type, alert.device_id, alert.rule, alert.state
                ):
                    act(automation, alert, gateway, out)


def act(automation: Automation, alert: Alert, gateway: GatewayBase, out: Outcome) -> None:
    asker = Asker(f"automation {automation.name}", ACCOUNT, ROLE)
    action = automation.action
    tenant = alert.tenant
    cause = cause_of(alert)
    if isinstance(action, CommandAction):
        request = CommandRequest(
            id=action_id(automation, alert), device=action.device, name=action.name,
            args=action.args,
        )  # fmt: skip
        submit_command(gateway, tenant, request, lambda: asker, ACCOUNT, out, cause=cause)
    elif isinstance(action, DesiredAction):
        desired = DesiredRequest(device=action.device, state=action.state)
        submit_desired(gateway, tenant, desired, lambda: asker, ACCOUNT, out, cause)
    else:
        notify(automation, action, alert, gateway, out)


def cause_of(alert: Alert) -> Cause:
    """What an automation's record says it acted on: the alert, and its change."""
    return Cause(alert.alert_id, f"{alert.rule} {alert.state} on {alert.device_id}")


def notify(
    automation: Automation, action: NoticeAction, alert: Alert, gateway: GatewayBase, out: Outcome
) -> None:
    """Records the notice, then publishes it (the consumer sends what it stored)."""
    message = action.message.format(
        tenant=alert.tenant,
        device=alert.device_id,
        device_type=alert.device_type,
        rule=alert.rule,
        message=alert.message,
        state=alert.state,
    )[:2000]
    now = gateway.stamp()
    event = CommandEvent(
        alert.tenant, alert.device_type, alert.device_id, "notice", automation.name, "sent",
        action_id(automation, alert), now, f"automation {automation.name}", ACCOUNT,
        reason=message, alert=alert.alert_id, trigger=cause_of(alert).trigger,
    )  # fmt: skip
    out.lines.append(event.to_line())
    notice = Notice(
        automation=automation.name, device=alert.device_id, device_type=alert.device_type,
        rule=alert.rule, alert=alert.alert_id, message=message, ts=stamp(now),
    )  # fmt: skip
    topic = notice_topic(gateway.prefix, alert.tenant, alert.device_id)
    out.publications.append(Publication(topic, to_wire(notice, "ts")))
