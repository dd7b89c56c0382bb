"""Who asks the gateway, and whether they may: the account a request's topic names (its role
and tenant from the registry), or on a serve account's on-behalf topic the person serve signed
in; the device, in the asker's tenant; the clearance a command or desired state needs."""

from __future__ import annotations

from dataclasses import dataclass

from devices.commands import ADMITTED_ROLES, admits
from devices.topics import COMMAND_REQUESTS, request_topic
from ingest.downlink.base import GatewayBase

ACTING_ROLES = ADMITTED_ROLES["operator"]  # whoever may send anything at all


class Refusal(Exception):
    """A request that was read and is not allowed; the message says who may, or what is wrong."""


@dataclass(frozen=True, slots=True)
class Asker:
    issuer: str  # who asked: the account, or the person a serve account asked for
    account: str
    role: str


def who_asks(
    gateway: GatewayBase,
    tenant: str,
    name: str,
    on_behalf: bool,
    by: str | None,
    role: str | None,
) -> Asker:
    """Who asks, from the registry (and, on a serve account's on-behalf topic, from serve)."""
    account = gateway.directory.account(name)
    if account is None:
        raise Refusal(
            f"account {name!r} is not in the registry (never added, or revoked): commands come "
            f"from operator or clinician accounts (`moclo accounts add operator NAME --tenant "
            f"{tenant}`) or through moclo serve"
        )
    if on_behalf:
        if account.role != "serve":
            raise Refusal(
                f"only serve accounts ask on behalf of someone; {name!r} is "
                f"{a_role(account.role)}: "
                f"ask on {request_topic(gateway.prefix, tenant, COMMAND_REQUESTS, name)}"
            )
        if not by or role is None or not 1 <= len(by) <= 64 or not by.isprintable():
            raise Refusal(
                "on the on-behalf topic, name the signed-in person (by: 1 to 64 printable "
                "characters) and their role (role)"
            )
        asker = Asker(by, name, role)
    elif account.role not in ACTING_ROLES and account.tenant is None:
        raise Refusal(
            f"{name!r} is {a_role(account.role)} account and acts for nobody itself; a person "
            "acts through serve's on-behalf topic, an operator or clinician on their own"
        )
    elif account.tenant != tenant:
        raise Refusal(f"account {name!r} belongs to tenant {account.tenant!r}, not {tenant!r}")
    else:
        asker = Asker(name, name, account.role)
    if asker.role not in ACTING_ROLES:
        raise Refusal(
            f"{asker.issuer!r} is {a_role(asker.role)}: viewers, apps and admins watch, they do "
            f"not act; operators and clinicians of {tenant} do"
        )
    return asker


def device_of(gateway: GatewayBase, tenant: str, device_id: str) -> str:
    """The type of the registered device `device_id` of `tenant`; Refusal if there is none."""
    device_type = gateway.directory.device_type(tenant, device_id)
    if device_type is None or device_type not in gateway.catalogue:
        raise Refusal(
            f"no device {device_id[:70]!r} in tenant {tenant!r}: "
            f"`moclo devices list --tenant {tenant}` lists its devices"
        )
    return device_type


def check_clearance(clearance: str, asker: Asker, what: str, tenant: str) -> None:
    if not admits(clearance, asker.role):  # type: ignore[arg-type]
        who = "operators and clinicians" if clearance == "operator" else "clinicians"
        raise Refusal(f"{what} is for {who} of {tenant}; {asker.issuer!r} is {a_role(asker.role)}")


def a_role(role: str) -> str:
    return f"{'an' if role[:1] in 'aeiou' else 'a'} {role}"
