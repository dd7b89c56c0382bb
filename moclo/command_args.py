"""`moclo command`, `moclo commands` and `moclo desired`: their parsers and the calls into
`moclo/command_cli.py` (imported only when a command runs: it needs the MQTT client). The
arguments are checked against the catalogue, before anything is sent, by
`moclo/command_checks.py`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from core.settings import Settings
from devices.catalogue import DEVICE_TYPES
from devices.commands import COMMAND_ID_RULE, MAX_EXPIRY_S
from devices.topics import IDENTIFIER_RULE, is_identifier
from devices.types import DeviceType
from moclo.args import Commands, connection_flags, duration
from moclo.command_checks import (
    ArgumentsError,
    command_arguments,
    desired_fields,
    device_type_of,
    tenant_refusal,
)

EXIT_STATUS = """\
exit status:
  0  succeeded (without --wait: ingest checked and sent it)
  1  the broker cannot be reached or refused the login
  2  bad arguments: nothing was sent
  3  refused by moclo (the reason says who may, or what is wrong)
  4  rejected by the device
  5  failed on the device
  6  expired before the device answered
  7  no answer within --timeout (is `moclo ingest` running?), or the connection lost once
     asked: it may still run (the same --id tells its state, never repeats it)
"""

COMMAND_EPILOG = f"""\
examples:
  moclo command home th-1 set_setpoint setpoint_c=21.5 --wait
  moclo command home meter-1 switch appliance=washer mode=standby
  moclo command home car-1 lock --wait --timeout 2m --json
  moclo command hospital pm-7 set_lower_rate lower_rate_bpm=60 --wait     (clinicians only)
  moclo command hospital pm-7 read_out --wait --json
  moclo command home car-1 unlock --id unlock-2026-12-06-a      (the same id again: no repeat)

The request goes to ingest, which checks who you are (your MQTT login, MOCLO_MQTT_USERNAME: an
operator or clinician account of TENANT), the device, the command and its arguments, records
it and sends it; a device that is offline gets it when it returns, unless it has expired.
`moclo devices types` lists each type's commands and their arguments.

{EXIT_STATUS}"""

COMMANDS_EPILOG = """\
examples:
  moclo commands home                           the tenant's commands of the last 24h
  moclo commands hospital pm-7 --limit 200      who changed this pacemaker, when, from what
  moclo commands home --follow                  then every command of the tenant, live
  moclo commands hospital pm-7 --follow --json  one device's, one JSON object a line
"""

DESIRED_EPILOG = f"""\
examples:
  moclo desired set home th-1 setpoint_c=20 --wait
  moclo desired set home meter-1 appliances.washer=off appliances.dryer=standby
  moclo desired set home car-1 locked=true
  moclo desired set hospital pm-7 lower_rate_bpm=55 --wait            (clinicians only)
  moclo desired show home th-1 --json

A desired state is what you want a device's settings to be, kept by moclo and delivered
whenever the device connects: the fields you name change, the others stay. With --wait,
`moclo desired set` returns once the device reports it applied them.

{EXIT_STATUS}"""


def add_parser(commands: Commands) -> None:
    """Adds `moclo command`, `moclo commands` and `moclo desired`."""
    _add_command(commands)
    _add_history(commands)
    _add_desired(commands)


def _add_command(commands: Commands) -> None:
    command = commands.add_parser(
        "command",
        help="ask a device to do something (lock, switch, set a setpoint) and see the outcome",
        description="Sends NAME with its ARG=VALUE arguments to TENANT's DEVICE through ingest, "
        "which checks and records it. Without --wait, returns once ingest has sent or refused "
        "it; with --wait, once the device has answered for good.",
        epilog=COMMAND_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _device_arguments(command)
    command.add_argument("name", metavar="NAME", help="the command, e.g. lock, set_setpoint")
    command.add_argument(
        "arguments", nargs="*", metavar="ARG=VALUE", help="its arguments, e.g. setpoint_c=21.5"
    )
    _wait_flags(command)
    command.add_argument(
        "--expires-in",
        type=duration,
        metavar="DURATION",
        help="the device must not act on it after this long, e.g. 10m (default: the "
        "command's own, from the catalogue; at most 7d)",
    )
    command.add_argument(
        "--id",
        type=_command_id,
        metavar="ID",
        help="your id for it, so that asking again (after a lost answer) is the same command, "
        f"never a second one ({COMMAND_ID_RULE}; default: a new one)",
    )
    connection_flags(command)


def _add_history(commands: Commands) -> None:
    history = commands.add_parser(
        "commands",
        help="the commands of a tenant or device: live with --follow",
        description="Lists what was asked of TENANT's devices, from InfluxDB (moclo_commands): "
        "with DEVICE, its steps (commands, desired changes with who, from and to, reported "
        "states); without, each command of the tenant with its status. --follow then prints "
        "each update as ingest announces it: sent, refused, accepted, succeeded, failed, "
        "rejected, expired.",
        epilog=COMMANDS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    history.add_argument("tenant", type=_identifier("tenant"), metavar="TENANT")
    history.add_argument("device", nargs="?", type=_identifier("device"), metavar="DEVICE")
    history.add_argument(
        "--since",
        type=duration,
        default=24 * 3600.0,
        metavar="DURATION",
        help="without DEVICE: the commands sent within this long (default 24h)",
    )
    history.add_argument(
        "--limit", type=_positive, default=50, metavar="N", help="the newest N (default 50)"
    )
    history.add_argument(
        "--follow", action="store_true", help="then watch live until Ctrl-C (or --count)"
    )
    history.add_argument("--count", type=_positive, metavar="N", help="stop after N updates")
    history.add_argument("--json", action="store_true", help="one JSON object a line")
    connection_flags(history)


def _add_desired(commands: Commands) -> None:
    desired = commands.add_parser(
        "desired",
        help="what a device's settings should be: set it, see it",
        description="The desired state of a device: moclo keeps it and delivers it whenever "
        "the device connects or it changes.",
        epilog=DESIRED_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = desired.add_subparsers(dest="desired_command", required=True, metavar="SUBCOMMAND")
    change = sub.add_parser(
        "set",
        help="change some fields of a device's desired state",
        description="Changes the named fields of DEVICE's desired state (the others stay).",
        epilog=DESIRED_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _device_arguments(change)
    change.add_argument(
        "fields", nargs="+", metavar="FIELD=VALUE", help="e.g. setpoint_c=20, locked=true"
    )
    _wait_flags(change)
    connection_flags(change)
    show = sub.add_parser(
        "show",
        help="a device's desired state, who set it, and whether it applied it",
        description="Reads DEVICE's desired state from InfluxDB (moclo_commands): its version, "
        "its fields, who set it when, and whether the device has reported applying it.",
        epilog=DESIRED_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("tenant", type=_identifier("tenant"), metavar="TENANT")
    show.add_argument("device", type=_identifier("device"), metavar="DEVICE")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    connection_flags(show)


def _device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tenant", type=_identifier("tenant"), metavar="TENANT")
    parser.add_argument("device", type=_identifier("device"), metavar="DEVICE")
    parser.add_argument(
        "--type",
        dest="device_type",
        choices=sorted(DEVICE_TYPES),
        metavar="TYPE",
        help="the device's type, to check the arguments before sending (default: found in the "
        "registry, MOCLO_REGISTRY, or among InfluxDB's stored devices)",
    )


def _wait_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true", help="wait for the device's final answer (see exit status)"
    )
    parser.add_argument(
        "--timeout",
        type=duration,
        default=None,
        metavar="DURATION",
        help="how long to wait (default 10s; with --wait, the command's expiry and 10s more)",
    )
    parser.add_argument("--json", action="store_true", help="each update as one JSON object")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """`moclo command`, `moclo commands`, `moclo desired set`; returns the exit status."""
    if args.command == "commands":
        return _history(args, settings)
    if args.command == "desired" and args.desired_command == "show":
        return _show_desired(args, settings)
    refused = _refused_before_asking(settings, args.tenant)
    if refused is not None:  # printed as ingest's refusal would be: the outcome, on stdout
        name = args.name if args.command == "command" else "desired"
        shown = {"tenant": args.tenant, "device": args.device, "name": name}
        shown |= {"status": "refused", "reason": refused}
        print(json.dumps(shown) if args.json else f"refused  {args.device} {name}: {refused}")
        return 3
    try:
        device_type = device_type_of(settings, args.tenant, args.device, args.device_type)
        if args.command == "command":
            return _command(args, settings, device_type)
        return _desired(args, settings, device_type)
    except ArgumentsError as exc:
        print(f"moclo: {exc}", file=sys.stderr)
        return 2


def _refused_before_asking(settings: Settings, tenant: str) -> str | None:
    """What the registry, if it is here, says against asking about `tenant` at all: a request
    the broker would drop unanswered is refused here, with the reason (exit 3), not timed out."""
    from moclo import command_cli

    try:
        account = command_cli.account_of(settings)
    except ValueError:
        return None  # said, with what to set, when the request is made
    return tenant_refusal(settings, account, tenant)


def _command(args: argparse.Namespace, settings: Settings, device_type: DeviceType) -> int:
    import uuid

    from devices.commands import CommandRequest
    from moclo import command_cli

    spec, arguments = command_arguments(device_type, args.name, args.arguments)
    if args.expires_in is not None and not 0 < args.expires_in <= MAX_EXPIRY_S:
        raise ArgumentsError("--expires-in must be more than 0s and at most 7d")
    request = CommandRequest(
        id=args.id or uuid.uuid4().hex,
        device=args.device,
        name=spec.name,
        args=arguments,
        expires_in_s=args.expires_in,
    )
    expiry = args.expires_in or spec.expiry_s
    timeout = args.timeout or (expiry + 10.0 if args.wait else 10.0)
    watch = command_cli.Watch(
        wait=args.wait,
        timeout_s=timeout,
        as_json=args.json,
        mine=lambda update: update.id == request.id,
    )
    return command_cli.send_command(settings, args.tenant, request, watch)


def _desired(args: argparse.Namespace, settings: Settings, device_type: DeviceType) -> int:
    import uuid

    from devices.commands import DesiredRequest
    from moclo import command_cli

    state = desired_fields(device_type, args.fields)
    # Our own id for the request: every command-status update about it echoes it.
    request = DesiredRequest(device=args.device, state=state, request_id=uuid.uuid4().hex)
    timeout = args.timeout or (60.0 if args.wait else 10.0)
    return command_cli.send_desired(
        settings, args.tenant, request, wait=args.wait, timeout_s=timeout, as_json=args.json
    )


def _history(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from moclo import command_cli, command_history

    async def history() -> None:
        await command_history.print_history(
            settings, args.tenant, args.device, since_s=args.since, limit=args.limit,
            as_json=args.json,
        )  # fmt: skip

    if not args.follow:
        asyncio.run(history())
        return 0
    try:
        # Subscribed before the stored steps are read, so none falls between the two.
        return asyncio.run(
            command_cli.follow_status(
                settings,
                args.tenant,
                args.device,
                as_json=args.json,
                count=args.count,
                first=history,
            )
        )
    except KeyboardInterrupt:
        return 130


def _show_desired(args: argparse.Namespace, settings: Settings) -> int:
    from moclo import command_history

    return command_history.show_desired(settings, args.tenant, args.device, as_json=args.json)


# -- argparse types --------------------------------------------------------------------------


def _identifier(kind: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not is_identifier(text):
            raise argparse.ArgumentTypeError(f"a {kind} id must match {IDENTIFIER_RULE}")
        return text

    return check


def _command_id(text: str) -> str:
    from devices.commands import COMMAND_ID

    if COMMAND_ID.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"a command id must match {COMMAND_ID_RULE}")
    return text


def _positive(text: str) -> int:
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError("write a whole number, 1 or more")
