"""`moclo rules`' arguments: its parser and the call into `moclo/rules_cli.py`, which is
imported only when the command runs (it loads the rules machinery, too slow for
`moclo --help`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from devices.catalogue import DEVICE_TYPES
from moclo.args import Commands


def add_parser(commands: Commands) -> None:
    """Adds `moclo rules list` and `moclo rules check` to the top-level subcommands."""
    rules = commands.add_parser(
        "rules",
        help="the alert rules: each device type's defaults and a rules file's changes",
        description="Alert rules come with each device type; a rules file (TOML, see\n"
        "deploy/rules.example.toml) changes, adds or switches them off per device type,\n"
        "tenant or device. Ingest reads the file named by MOCLO_RULES_FILE.",
        epilog="examples:\n"
        "  moclo rules list --type cow_tracker\n"
        "  moclo rules list --file rules.toml --tenant de-wei-farm --device cow-0007 --json\n"
        "  moclo rules check rules.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rule_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="SUBCOMMAND")
    rules_list = rule_commands.add_parser(
        "list",
        help="the rules in force, and where each comes from",
        description="Lists the rules in force for a scope: the device types' defaults with the "
        "rules file's entries on top. Without --tenant only the file's type-wide entries count; "
        "with --tenant that tenant's too; with --device also that device's.",
    )
    rules_list.add_argument(
        "--file",
        type=Path,
        metavar="FILE",
        help="rules file (default: MOCLO_RULES_FILE if set, else the defaults alone)",
    )
    rules_list.add_argument(
        "--type",
        dest="device_type",
        choices=list(DEVICE_TYPES),
        metavar="TYPE",
        help="one device type (default: all), see `moclo devices types`",
    )
    rules_list.add_argument("--tenant", help="the rules for this tenant")
    rules_list.add_argument("--device", help="the rules for this device (needs --tenant)")
    rules_list.add_argument("--json", action="store_true", help="machine-readable output")
    rules_check = rule_commands.add_parser(
        "check",
        help="check a rules file without starting ingest",
        description="Reads a rules file as ingest would. Exits 0 with a one-line summary, or 2 "
        "with every problem on stderr, one a line, as FILE:LINE: rule NAME (TYPE): what is "
        "wrong and what is allowed.",
    )
    rules_check.add_argument("file", type=Path, metavar="FILE", help="the rules file (TOML)")


def run(args: argparse.Namespace) -> int:
    """`moclo rules list` or `moclo rules check`; returns the exit status."""
    from moclo import rules_cli

    if args.rules_command == "check":
        return rules_cli.check_rules(args.file)
    return rules_cli.list_rules(
        file=args.file or rules_cli.rules_file_from_environment(),
        device_type=args.device_type,
        tenant=args.tenant,
        device_id=args.device,
        as_json=args.json,
    )
