"""`moclo tokens`' arguments: its parser and the call into `moclo/tokens_cli.py`.

No argument is ever a secret: `create` makes the token and prints it, once; `list` and `revoke`
name tokens by their id or name. A token typed on a command line would show in `ps`.
"""

from __future__ import annotations

import argparse

from core.settings import Settings
from moclo.args import Commands

TOKENS_EPILOG = """\
examples:
  moclo tokens create ana --tenant farm --role operator       may acknowledge the farm's alerts
  moclo tokens create dr-lee --tenant hospital --role clinician   may also adjust its pacemakers
  moclo tokens create wall-screen --tenant farm --tenant clinic          a viewer of two tenants
  moclo tokens create root --role admin --all-tenants
  moclo tokens list
  moclo tokens revoke ana

Roles:
  viewer     reads its tenants
  operator   also acknowledges their alerts and sends their devices commands and desired
             states (lock a car, switch an appliance, change a setpoint)
  clinician  as an operator, and also acts on medical devices (a pacemaker's read-out and
             lower rate), which nobody else may
  admin      reads and acknowledges alerts; with --all-tenants in every tenant, also those
             added later; sends no command (an admin manages; people act)

Tokens are kept in the registry (MOCLO_REGISTRY, default .moclo/registry.sqlite), which
`moclo serve` reads: a new or revoked token counts within a second, without a restart. A token
is shown once, when it is created; only a hash of it is stored. On its own, the token is printed
to stdout and the explanation to stderr, so TOKEN=$(moclo tokens create ...) holds the token.
"""


def add_parser(commands: Commands) -> None:
    """Adds `moclo tokens` (`create`, `list`, `revoke`) to the top-level subcommands."""
    tokens = commands.add_parser(
        "tokens",
        help="API tokens for people and apps: the dashboard and the HTTP API",
        description="Tokens sign people and apps in to the dashboard and the HTTP API of "
        "`moclo serve`. Each is scoped to one or more tenants (or, for an admin, every tenant) "
        "and has a role: viewer, operator (may acknowledge alerts and command devices), "
        "clinician (as operator, and medical devices too) or admin (acknowledges, commands "
        "nothing).",
        epilog=TOKENS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token_commands = tokens.add_subparsers(
        dest="tokens_command", required=True, metavar="SUBCOMMAND"
    )
    _add_create(token_commands)

    listing = token_commands.add_parser(
        "list", help="the tokens (never their secrets)", description="Lists the active tokens."
    )
    listing.add_argument("--all", action="store_true", help="also the revoked ones")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    registry_flag(listing)

    revoke = token_commands.add_parser(
        "revoke",
        help="revoke a token: it stops working within a second",
        description="Revokes the active token with this id (as listed), or else this name. "
        "`moclo serve` refuses it within a second and ends its open live streams.",
    )
    revoke.add_argument("token", metavar="ID|NAME", help="the token's id or name")
    registry_flag(revoke)


def _add_create(token_commands: Commands) -> None:
    """`moclo tokens create`."""
    create = token_commands.add_parser(
        "create",
        help="make a token and print it, once",
        description="Makes a token for NAME and prints it, once: only a hash of it is kept.",
        epilog=TOKENS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    create.add_argument(
        "name",
        metavar="NAME",
        help="who or what it is for (e.g. ana, grafana); acknowledgements are made by this name",
    )
    create.add_argument(
        "--tenant",
        dest="tenants",
        action="append",
        metavar="TENANT",
        help="a tenant it may see; repeat for several",
    )
    create.add_argument(
        "--all-tenants",
        action="store_true",
        help="every tenant, also those added later (admins only)",
    )
    create.add_argument(
        "--role",
        choices=("viewer", "operator", "clinician", "admin"),
        default="viewer",
        help="viewer (default): reads; operator: also acknowledges alerts and commands "
        "devices; clinician: as operator, and medical devices too; admin: reads and "
        "acknowledges, commands nothing",
    )
    create.add_argument("--json", action="store_true", help="machine-readable output")
    registry_flag(create)


def registry_flag(parser: argparse.ArgumentParser) -> None:
    # dest is the setting's name, so `_settings` passes it to Settings.load like the others.
    parser.add_argument("--registry", metavar="FILE", help="the registry (MOCLO_REGISTRY)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """`moclo tokens create|list|revoke`; returns the exit status."""
    from moclo import tokens_cli

    if args.tokens_command == "create":
        return tokens_cli.create(
            settings,
            args.name,
            tenants=args.tenants,
            all_tenants=args.all_tenants,
            role=args.role,
            as_json=args.json,
        )
    if args.tokens_command == "list":
        return tokens_cli.list_tokens(settings, include_revoked=args.all, as_json=args.json)
    return tokens_cli.revoke(settings, args.token)
