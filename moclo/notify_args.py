"""`moclo notify` and `moclo oncall`: their parsers, and the calls into `moclo/notify_cli.py`,
imported only when a command runs. `notify check` and `oncall show` read the notify file alone:
they need no broker and no database. Where another module builds the `moclo notify` group (the
notifier's `run` and `test`), it adds `check` with `add_check` instead of calling `add_parser`,
and the top level adds `oncall` with `add_oncall`; `needs_settings` and `run` stay as they are."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.settings import ENVIRONMENT
from moclo.args import Commands

NOTIFY_EPILOG = """\
examples:
  moclo notify check deploy/notify.example.toml
  MOCLO_NOTIFY_FILE=notify.toml moclo notify check

The notify file (TOML: people and their channels, on-call rotations, routes with escalation
steps, quiet hours, grouping) is described in docs/notifications.md; the notifier reads the one
named by MOCLO_NOTIFY_FILE. Channel URLs are secrets: `check` shows only their labels.
"""

ONCALL_EPILOG = """\
examples:
  moclo oncall show                            who is on call now, in every rotation
  moclo oncall show --tenant cardiology --at 2026-12-24T20:00
  moclo oncall show --at 2026-03-29T07:30+02:00 --json
  moclo oncall show --file notify.toml

A time without an offset (--at 2026-12-24T20:00) is read in each rotation's own time zone.
"""

NOTIFY_FILE_VARIABLE = ENVIRONMENT["notify_file"]


def add_parser(commands: Commands) -> None:
    """Adds `moclo notify` (with `check`) and `moclo oncall show` to the top-level commands."""
    notify = commands.add_parser(
        "notify",
        help="notifications: check the notify file (who is told what)",
        description="Notifications reach people through their channels (ntfy, Pushover, "
        "e-mail, webhooks, … via Apprise), routed by the notify file.",
        epilog=NOTIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_check(notify.add_subparsers(dest="notify_command", required=True, metavar="SUBCOMMAND"))
    add_oncall(commands)


def add_check(notify_commands: Commands) -> None:
    """Adds `check` to `moclo notify`'s subcommands: a module that builds the `notify` group
    with more subcommands (`run`, `test`) calls this, and hands `check` to `run` below."""
    check = notify_commands.add_parser(
        "check",
        help="check a notify file without starting the notifier",
        description="Reads a notify file as the notifier would. Exits 0 with a summary "
        "(people and their channels, shown by label, rotations, routes), or 2 with every "
        "problem on stderr, one a line, as FILE:LINE: what is wrong, what to write.",
        epilog=NOTIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "file", nargs="?", type=Path, metavar="FILE", help=f"default: {NOTIFY_FILE_VARIABLE}"
    )


def add_oncall(commands: Commands) -> None:
    """Adds `moclo oncall show` to the top-level commands."""
    oncall = commands.add_parser(
        "oncall",
        help="on-call rotations: who is on call, and the next shifts",
        description="On-call rotations of the notify file: who is on call (overrides "
        "included) and who is next in line.",
        epilog=ONCALL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = oncall.add_subparsers(dest="oncall_command", required=True, metavar="SUBCOMMAND")
    show = sub.add_parser(
        "show",
        help="who is on call at a time (default now), and the next shifts",
        description="For each rotation: who is on call at --at (default now) and until when, "
        "who is next in line (escalation's #2, #3), and the next shifts; overrides are marked.",
        epilog=ONCALL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument(
        "--at",
        metavar="TIME",
        help="ISO 8601 date and time; without an offset, in each rotation's time zone "
        "(default: now)",
    )
    show.add_argument("--tenant", help="only this tenant's rotations")
    show.add_argument("--file", type=Path, metavar="FILE", help=f"default: {NOTIFY_FILE_VARIABLE}")
    show.add_argument("--json", action="store_true", help="machine-readable output")


def needs_settings(args: argparse.Namespace) -> bool:
    """Whether the command needs the connection settings (`check` and `show` do not)."""
    return args.command == "notify" and args.notify_command not in ("check",)


def run(args: argparse.Namespace) -> int:
    """`moclo notify check` or `moclo oncall show`; returns the exit status."""
    from moclo import notify_cli

    if args.command == "oncall":
        return notify_cli.show_oncall(
            file=args.file, at=args.at, tenant=args.tenant, as_json=args.json
        )
    return notify_cli.check_notify(args.file)
