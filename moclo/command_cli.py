"""`moclo command` and `moclo desired set`: asking moclo to act on a device, and following
what becomes of it.

A person never publishes to a device: the request goes to ingest (the gateway) on
`{prefix}/{tenant}/command-requests/{account}` (or `desired-requests`), the account being the
MQTT login, which the broker lets write only its own name. Ingest checks who asks, the device,
the command and its arguments, records it, sends it, and announces each step on
`{prefix}/{tenant}/command-status/{device}`. This module subscribes to that topic before it
publishes (so no answer can come before it listens), then prints each step of its command:
without `--wait` until ingest has sent or refused it, with `--wait` until a final status.

It logs in as `LOGIN~commands` (core/mqtt.py `connection_login`), the account's connection
for requests, so a `moclo commands --follow` or `moclo alerts --follow` on the account's own
login keeps running. The exit status says the outcome (EXIT_CODES). Argument parsing and the
arguments' checks against the catalogue are in `moclo/command_args.py`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiomqtt
import orjson
from pydantic import ValidationError

from core.settings import Settings
from devices.commands import FINAL_STATUSES, CommandRequest, CommandUpdate, DesiredRequest
from devices.rfc3339 import format_us
from devices.rule_base import format_seconds
from devices.topics import (
    ACCOUNT_NAME,
    ACCOUNT_NAME_RULE,
    COMMAND_REQUESTS,
    DESIRED_REQUESTS,
    command_status_subscription,
    command_status_topic,
    request_topic,
)
from ingest.alerts.acknowledge import broker
from moclo.command_history import printable

# The exit status of `moclo command` and `moclo desired set`, by the command's last status
# (documented in their --help: moclo/command_args.py EXIT_STATUS).
EXIT_CODES: dict[str, int] = {
    "succeeded": 0,
    "sent": 0,  # without --wait: ingest checked, recorded and sent it
    "accepted": 0,  # without --wait, if the device answered that fast
    "refused": 3,  # moclo did not send it: who may not, or what is wrong (the reason says)
    "rejected": 4,  # the device would not
    "failed": 5,  # the device tried and failed
    "expired": 6,  # no final answer before its expiry; the device did not act
}
EXIT_TIMEOUT = 7  # no answer within --timeout: is ingest running? The command may still run


class _LostAfterAsking(Exception):
    """The connection went after the request was published: it may well be carried out."""


@dataclass(frozen=True)
class Watch:
    """How to follow one request: which updates are its, and when to stop."""

    wait: bool  # until a final status; else until ingest has sent or refused it
    timeout_s: float
    as_json: bool
    mine: Callable[[CommandUpdate], bool]


def account_of(settings: Settings) -> str:
    """Who asks: the MQTT login (the broker checks it). On a broker without logins, which
    checks nobody, $USER; ValueError says what to set."""
    login = settings.mqtt.username
    if login is not None:
        return login
    user = os.environ.get("USER", "")
    if ACCOUNT_NAME.fullmatch(user) is None:
        raise ValueError(
            "set MOCLO_MQTT_USERNAME and MOCLO_MQTT_PASSWORD to your operator or clinician "
            f"account's login (without a login, $USER names you, and must match "
            f"{ACCOUNT_NAME_RULE}; it is {user!r})"
        )
    return user


def send_command(settings: Settings, tenant: str, request: CommandRequest, watch: Watch) -> int:
    """Asks for `request` on `tenant`'s device and follows it; returns the exit status."""
    try:
        account = account_of(settings)
    except ValueError as exc:
        print(f"moclo: {exc}", file=sys.stderr)
        return 2
    topic = request_topic(settings.topic_prefix, tenant, COMMAND_REQUESTS, account)
    payload = orjson.dumps(request.model_dump(mode="json", exclude_none=True))
    what = f"{request.name} on {tenant}/{request.device} (id {request.id})"
    # --id may be guessed and taken first by another account: its updates are not this one's.
    mine = watch.mine
    watch = replace(watch, mine=lambda update: mine(update) and update.issuer == account)
    return _run(settings, tenant, request.device, topic, payload, watch, what)


def send_desired(
    settings: Settings,
    tenant: str,
    request: DesiredRequest,
    *,
    wait: bool,
    timeout_s: float,
    as_json: bool,
) -> int:
    """Asks for a change of `tenant`'s device's desired state and follows it."""
    try:
        account = account_of(settings)
    except ValueError as exc:
        print(f"moclo: {exc}", file=sys.stderr)
        return 2
    topic = request_topic(settings.topic_prefix, tenant, DESIRED_REQUESTS, account)
    payload = orjson.dumps(request.model_dump(mode="json", exclude_none=True))
    mine = desired_follower(account, request.request_id)
    watch = Watch(wait=wait, timeout_s=timeout_s, as_json=as_json, mine=mine)
    what = f"desired state of {tenant}/{request.device}"
    return _run(settings, tenant, request.device, topic, payload, watch, what)


def desired_follower(
    account: str, request_id: str | None = None
) -> Callable[[CommandUpdate], bool]:
    """Which command-status updates are this desired change's: those that echo its
    `request_id` and name this account as their asker (the echo is read by the whole tenant,
    and another account may ask under the same id). Ingest names a change
    `{device}-desired-{version}`, a version this side cannot know; an ingest from before
    request ids echoes none, so then the first `desired` update asked by this account is taken
    for it; but not a bare `succeeded`: that is the
    device confirming an earlier version of the same account, while ingest's answer to a
    request is always `sent`, `refused`, or an update with a reason ("nothing to change")."""
    followed: list[str] = []

    def mine(update: CommandUpdate) -> bool:
        if update.request_id is not None:
            return update.request_id == request_id and update.issuer == account
        if followed:
            return update.id == followed[0]
        if update.name != "desired" or update.issuer != account:
            return False
        if update.status == "succeeded" and update.reason is None:
            return False  # an earlier change applied, not the answer to this one
        followed.append(update.id)
        return True

    return mine


def _run(
    settings: Settings,
    tenant: str,
    device: str,
    topic: str,
    payload: bytes,
    watch: Watch,
    what: str,
) -> int:
    try:
        last, done = asyncio.run(_ask(settings, tenant, device, topic, payload, watch))
    except KeyboardInterrupt:
        return 130
    except _LostAfterAsking as lost:
        # Not "run it again": that would be a second command. Its id learns what became of it.
        print(
            f"moclo: asked for {what}, then lost the broker ({lost}; another client logging in "
            "with this login takes its connection), so its outcome was not heard: it may "
            f"still be carried out. `moclo commands {tenant} {device}` shows what becomes of "
            "it; a command asked again with the same --id tells its state, never repeats it",
            file=sys.stderr,
        )
        return EXIT_TIMEOUT
    waited = format_seconds(watch.timeout_s)
    if last is None:
        print(
            f"moclo: asked for {what}, but ingest did not answer within {waited}: is `moclo "
            "ingest` running? (A broker that checks logins also drops, unanswered over MQTT "
            f"3.1.1, what the login may not write: may it write {topic}?)",
            file=sys.stderr,
        )
        return EXIT_TIMEOUT
    if not done:
        # Ingest has it and the device may still answer: asking again with the same id
        # learns its state without repeating it.
        print(
            f"moclo: {what} is {last.status}, but the device gave no final answer within "
            f"{waited}; `moclo commands {tenant} {device}` shows what becomes of it",
            file=sys.stderr,
        )
        return EXIT_TIMEOUT
    return EXIT_CODES[last.status]


async def _ask(
    settings: Settings, tenant: str, device: str, topic: str, payload: bytes, watch: Watch
) -> tuple[CommandUpdate | None, bool]:
    """Publishes the request and prints its updates: (the last one, whether it was the one
    waited for); the last is None if ingest said nothing before the timeout."""
    status = command_status_topic(settings.topic_prefix, tenant, device)
    last: CommandUpdate | None = None
    async with broker(settings.mqtt.for_connection("commands")) as mqtt:
        await mqtt.subscribe(status, qos=1)  # first: the answer cannot come before we listen
        await mqtt.publish(topic, payload, qos=1)
        try:
            async with asyncio.timeout(watch.timeout_s):
                async for message in mqtt.messages:
                    update = parse_update(bytes(message.payload))
                    if update is None or not watch.mine(update):
                        continue
                    print_update(update, as_json=watch.as_json)
                    last = update
                    if update.status in FINAL_STATUSES or not watch.wait:
                        return update, True
        except TimeoutError:
            pass
        except aiomqtt.MqttError as exc:
            raise _LostAfterAsking(str(exc)) from None
    return last, False


async def follow_status(
    settings: Settings,
    tenant: str,
    device: str | None,
    *,
    as_json: bool,
    count: int | None,
    first: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """`moclo commands --follow`: prints every command update of the tenant (or device) as
    ingest announces it, until Ctrl-C or `count` updates. `first` (the stored history) runs
    once subscribed, so no update falls between the two; one in both may be printed twice."""
    prefix = settings.topic_prefix
    topic = (
        command_status_subscription(prefix, tenant)
        if device is None
        else command_status_topic(prefix, tenant, device)
    )
    printed = 0
    async with broker(settings.mqtt) as mqtt:
        await mqtt.subscribe(topic, qos=1)
        if first is not None:
            await first()
        print(f"watching {topic} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        async for message in mqtt.messages:
            update = parse_update(bytes(message.payload))
            if update is None:
                print(f"moclo: unreadable command status on {message.topic}", file=sys.stderr)
                continue
            print_update(update, as_json=as_json)
            printed += 1
            if count is not None and printed >= count:
                break
    return 0


def parse_update(payload: bytes) -> CommandUpdate | None:
    try:
        return CommandUpdate.model_validate_json(payload)
    except ValidationError:
        return None


def update_json(update: CommandUpdate) -> dict[str, Any]:
    """The update as JSON for people's programs: `ts` as RFC 3339 UTC, as the wire allows."""
    shown = update.model_dump(mode="json")
    shown["ts"] = format_us(update.ts)
    return shown


def print_update(update: CommandUpdate, *, as_json: bool) -> None:
    shown = update_json(update)
    print(json.dumps(shown, ensure_ascii=False) if as_json else describe(shown), flush=True)


def describe(update: dict[str, Any]) -> str:
    """`2026-12-06T15:02:11.5Z  succeeded  th-a set_setpoint by owner (id …): reason`."""
    line = (
        f"{update['ts']}  {update['status']:<9}  {update['device']} {update['name']} "
        f"by {update['issuer']} (id {update['id']})"
    )
    if update.get("reason"):
        line += f": {update['reason']}"
    if update.get("output"):
        line += " " + json.dumps(update["output"], ensure_ascii=False, sort_keys=True)
    return printable(line)
