"""`moclo alerts`' arguments: its parser, the checks on ids, scopes and notes, and the call
into `moclo/alerts_cli.py`, which is imported only when the command runs (it needs the MQTT
client, too slow to load for `moclo --help`)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from core.settings import Settings
from devices.topics import IDENTIFIER_RULE, is_identifier
from moclo.args import Commands, connection_flags, duration
from query.errors import QueryError
from query.times import parse_since

ALERTS_EPILOG = """\
examples:
  moclo alerts                              the open alerts, critical first, then the newest
  moclo alerts --tenant farm --severity critical --since 6h
  moclo alerts --all --json                 also resolved ones, for a program
  moclo alerts --follow                     then every change as it happens (Ctrl-C to stop)
  moclo alerts ack 3f2a9c0d1e4b --note "vet called"

The list is read from InfluxDB (MOCLO_INFLUX_URL, MOCLO_INFLUX_DB); live changes and
acknowledgements go through the broker (MOCLO_MQTT_URL), and `moclo ingest` must be running
for an acknowledgement to be taken.
"""


def add_parser(commands: Commands) -> None:
    """Adds `moclo alerts` (and `ack`, `watch`) to the top-level subcommands."""
    alerts = commands.add_parser(
        "alerts",
        help="the open alerts, their changes live, and acknowledging one",
        description="Without a subcommand: lists the open alerts from InfluxDB (the latest change\n"
        "of each rule's latest episode), critical first, then the newest. --json prints an array\n"
        "of objects with the keys of the published alert JSON (acknowledged_by always there,\n"
        "null until acknowledged). --follow then prints each change live from MQTT.",
        epilog=ALERTS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _alert_filter_flags(alerts)
    connection_flags(alerts)
    # Flags given before the subcommand (`moclo alerts --tenant t watch`) must survive it:
    # argparse writes a subcommand's defaults over the same flags, so the subcommands' flags
    # have none (argument_default=SUPPRESS) and the defaults are `moclo alerts`' alone,
    # --severity's included (set here rather than by the flag, which the subcommand shares).
    alerts.set_defaults(severity="info")
    alert_commands = alerts.add_subparsers(dest="alerts_command", metavar="SUBCOMMAND")
    _add_acknowledge(alert_commands)
    watch = alert_commands.add_parser(
        "watch",
        argument_default=argparse.SUPPRESS,
        help="deprecated: use `moclo alerts --follow`",
        description="The same as `moclo alerts --follow`, kept for scripts.",
    )
    _alert_filter_flags(watch)
    connection_flags(watch)


def _add_acknowledge(alert_commands: Commands) -> None:
    """`moclo alerts ack`: acknowledging one open alert."""
    acknowledge = alert_commands.add_parser(
        "ack",  # the CLI's command: a contract, kept short
        argument_default=argparse.SUPPRESS,
        help="acknowledge an open alert: someone is on it",
        description="Looks the alert up in InfluxDB, publishes the acknowledgement to "
        "{prefix}/{tenant}/acks/{account} and waits until ingest publishes the `acknowledged` "
        "change. The account is your MQTT login (MOCLO_MQTT_USERNAME): the broker lets it "
        "write only its own name, so that is who acknowledged. Exits 1 if the alert is "
        "unknown, resolved or already acknowledged, or if ingest does not confirm in time; 2 "
        "if --by is not the login.",
    )
    acknowledge.add_argument(
        "id", type=_alert_id, metavar="ID", help="the alert's id (12 hex digits)"
    )
    acknowledge.add_argument(
        "--by",
        type=_alert_text("by"),
        default=None,
        metavar="NAME",
        help="only for a broker without logins, where nothing checks it: who is on it, "
        "an account name (default: $USER). With a login, you are the login; a different "
        "--by is refused (name others in --note)",
    )
    acknowledge.add_argument(
        "--note",
        type=_alert_text("note"),
        default="",
        metavar="TEXT",
        help="what is being done, up to 500 characters",
    )
    acknowledge.add_argument(
        "--timeout",
        type=duration,
        default=10.0,
        metavar="DURATION",
        help="how long to wait for ingest to confirm (default 10s)",
    )
    connection_flags(acknowledge)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """`moclo alerts`, `moclo alerts ack` and `moclo alerts watch`; returns the exit status."""
    from moclo import alerts_cli
    from query.alerts import AlertFilter

    if args.alerts_command == "ack":
        return alerts_cli.acknowledge(
            settings,
            args.id,
            by=args.by,
            note=args.note,
            timeout_s=args.timeout,
        )
    follow = args.follow or args.alerts_command == "watch"
    if args.alerts_command == "watch":
        print(
            "moclo: `moclo alerts watch` is deprecated: use `moclo alerts --follow`",
            file=sys.stderr,
        )
    if args.count is not None and not follow:
        print("moclo: --count needs --follow", file=sys.stderr)
        return 2
    query = AlertFilter(
        tenant=args.tenant,
        device_id=args.device,
        min_severity=args.severity,
        since_s=args.since,
        include_resolved=args.all,
    )
    if follow:
        return alerts_cli.follow_alerts(settings, query, as_json=args.json, count=args.count)
    return alerts_cli.list_alerts(settings, query, as_json=args.json)


def _alert_filter_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", type=_alert_scope("tenant"), help="one tenant (default: all)")
    parser.add_argument(
        "--device", type=_alert_scope("device"), help="one device id (default: all)"
    )
    parser.add_argument(
        "--severity",
        choices=("info", "warning", "critical"),
        help="the least severity shown (default info: all)",
    )
    parser.add_argument(
        "--since",
        type=_since,
        metavar="DURATION",
        help="only alerts raised within this long, e.g. 6h (default: any time)",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="also resolved alerts: the latest episode of every rule, in any state",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="machine-readable: a JSON array; with --follow one object a line",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="after the list, print each alert change live from MQTT until Ctrl-C",
    )
    parser.add_argument(
        "--count",
        type=_positive,
        metavar="N",
        help="with --follow: exit after N live changes (for scripts)",
    )


def _alert_id(text: str) -> str:
    from ingest.alerts.acknowledge import check_alert_id

    try:
        return check_alert_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _alert_scope(kind: str) -> Callable[[str], str | None]:
    def check(text: str) -> str | None:
        if text == "+":  # `alerts watch --tenant +` meant all tenants
            return None
        if not is_identifier(text):
            raise argparse.ArgumentTypeError(f"a {kind} id must match {IDENTIFIER_RULE}")
        return text

    return check


def _alert_text(kind: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        from ingest.alerts.acknowledge import check_acknowledgement_text

        try:
            return check_acknowledgement_text(kind, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


def _since(text: str) -> float:
    """`--since`: parsed and bounded exactly as the API's `since` (query/times.py)."""
    try:
        return parse_since(text, now_ns=time.time_ns())
    except QueryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError("write a whole number, 1 or more")
