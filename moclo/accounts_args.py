"""`moclo accounts` (service and tenant accounts on the broker) and `moclo broker-auth` (the
broker's password and ACL files): their parsers and the calls into `moclo/accounts_cli.py`."""

from __future__ import annotations

import argparse
from pathlib import Path

from access.registry import ROLES
from core.settings import Settings
from moclo.args import Commands

ACCOUNTS_EPILOG = """\
roles (what each may do on the broker, {p} being the topic prefix):
  ingest     receive all telemetry, acknowledgements, command and desired-state requests
             and devices' answers; publish alerts, alert state, commands, desired states
             and command status
  serve      receive all telemetry, alerts, alert state and command status; publish
             acknowledgements, command and desired-state requests for API token holders
             ({p}/+/acks/NAME/on-behalf, {p}/+/command-requests/NAME/on-behalf, ...)
  notify     (the notifier) receive all alerts and automation notices; publish nothing
  app        (one tenant) receive that tenant's alerts, alert state and command status;
             publish nothing
  operator   (one tenant) as app, and publish that tenant's acknowledgements, command and
             desired-state requests under its own name ({p}/TENANT/acks/NAME,
             {p}/TENANT/command-requests/NAME: `moclo alerts ack`, `moclo command`)
  clinician  (one tenant) as operator; ingest also lets it act on medical devices (a
             pacemaker), which an operator may not
No account publishes to a device: ingest checks each request (who, the device, the command,
its arguments), records it, and only then sends it.

examples:
  moclo accounts add ingest ingest --env-out ingest.env
  moclo accounts add app farm-app --tenant demo-farm
  moclo accounts add clinician dr-lee --tenant hospital --env-out dr-lee.env
  moclo accounts revoke farm-app
  moclo accounts list

A service reads its login from MOCLO_MQTT_USERNAME and MOCLO_MQTT_PASSWORD (an --env-out file
holds exactly those two lines).
"""


def add_parser(commands: Commands) -> None:
    """Adds `moclo accounts`, and beside it `moclo broker-auth` and `moclo provision`."""
    accounts = commands.add_parser(
        "accounts",
        help="broker accounts of services (ingest, serve, notify) and of tenants' apps, "
        "operators and "
        "clinicians",
        description="Accounts that log in to the broker: ingest, serve and notify see every "
        "tenant, an "
        "app, operator or clinician account only its own tenant's alerts and commands.",
        epilog=ACCOUNTS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = accounts.add_subparsers(dest="accounts_command", required=True, metavar="SUBCOMMAND")
    add = sub.add_parser(
        "add",
        help="add an account and issue its login",
        description="Adds an account and prints its generated password once (only a hash is "
        "kept); with --env-out it goes to that file instead.",
    )
    add.add_argument("role", choices=ROLES, metavar="ROLE", help=", ".join(ROLES))
    add.add_argument("name", metavar="NAME", help="the username, ^[a-z][a-z0-9_-]{0,63}$")
    add.add_argument("--tenant", help="the tenant of an app, operator or clinician account")
    add.add_argument(
        "--env-out",
        type=Path,
        metavar="FILE",
        help="write MOCLO_MQTT_USERNAME=... and MOCLO_MQTT_PASSWORD=... to this file (0600) "
        "instead of printing the password",
    )
    add.add_argument("--json", action="store_true", help="machine-readable output")
    _registry_flags(add)
    revoke = sub.add_parser("revoke", help="take an account's login back")
    revoke.add_argument("name", metavar="NAME")
    _registry_flags(revoke)
    listing = sub.add_parser("list", help="list the accounts")
    listing.add_argument("--all", action="store_true", help="revoked ones too")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--registry", metavar="FILE", help="the registry (MOCLO_REGISTRY)")

    _add_broker_auth(commands)
    _add_provision(commands)


def _add_broker_auth(commands: Commands) -> None:
    """`moclo broker-auth write`."""
    broker = commands.add_parser(
        "broker-auth",
        help="write Mosquitto's password and ACL files from the registry",
        description="Writes DIR/passwords and DIR/acl from the registry's devices and accounts "
        "(each change to the registry does this by itself, in MOCLO_BROKER_AUTH_DIR) and "
        "prints the mosquitto.conf lines that use them. Reloads the broker given by "
        "--reload-pid, else the local one whose pid is in DIR/mosquitto.pid, if running.",
    )
    broker_sub = broker.add_subparsers(dest="broker_command", required=True, metavar="SUBCOMMAND")
    write = broker_sub.add_parser("write", help="write the files (and reload the broker)")
    write.add_argument(
        "directory",
        nargs="?",
        type=Path,
        metavar="DIR",
        help="where (default MOCLO_BROKER_AUTH_DIR, else `broker` beside the registry)",
    )
    write.add_argument(
        "--reload-pid", type=int, metavar="PID", help="send this broker process SIGHUP"
    )
    write.add_argument(
        "--group",
        metavar="GROUP",
        help="make the files 0640 and owned by GROUP, for a broker running as another user "
        "(Debian's service: mosquitto)",
    )
    _registry_flags(write)


def _add_provision(commands: Commands) -> None:
    """`moclo provision`."""
    provision = commands.add_parser(
        "provision",
        help="make sure service accounts and a fleet's device logins exist (idempotent)",
        description="For a deployment that hands secrets to its services as files "
        "(docker-compose's `provision` service runs this on every start). Each --account is "
        "kept if it is registered and FILE holds its password, else issued (again) with the "
        "password written to FILE (0600); --devices does the same for every device of a "
        "scenario, with their logins in the CSV that `moclo simulate --credentials` reads. "
        "Then the broker's password and ACL files are written to MOCLO_BROKER_AUTH_DIR. "
        "Nothing secret is printed.",
        epilog=PROVISION_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    provision.add_argument(
        "--account",
        nargs=3,
        action="append",
        default=[],
        metavar=("ROLE", "NAME", "FILE"),
        help="a service account (ROLE ingest, serve or notify) and the file for its password; "
        "repeat",
    )
    provision.add_argument(
        "--devices",
        nargs=2,
        metavar=("SCENARIO", "CSV"),
        help="register every device of this scenario (name or file); logins go to CSV",
    )
    provision.add_argument(
        "--group",
        metavar="GROUP",
        help="make the broker's files 0640 and owned by GROUP (the broker's user's group)",
    )
    _registry_flags(provision)


PROVISION_EPILOG = """\
example (what docker-compose.yml runs):
  moclo provision \\
    --account ingest compose-ingest /var/lib/moclo-secrets/ingest/mqtt-password \\
    --account serve compose-serve /var/lib/moclo-secrets/serve/mqtt-password \\
    --devices /etc/moclo/fleet.toml /var/lib/moclo-secrets/simulator/devices.csv \\
    --group mosquitto
and the services read them with MOCLO_MQTT_PASSWORD_FILE=FILE and
`moclo simulate --scenario ... --connections device --credentials CSV`.
"""


def _registry_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", metavar="FILE", help="the registry (MOCLO_REGISTRY)")
    parser.add_argument(
        "--topic-prefix", help="topic prefix, for the broker's ACL file (MOCLO_TOPIC_PREFIX)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """`moclo accounts ...` or `moclo broker-auth write`; returns the exit status."""
    from moclo import accounts_cli

    if args.command == "provision":
        return accounts_cli.provision(
            settings, accounts=args.account, devices=args.devices, group=args.group
        )
    if args.command == "broker-auth":
        return accounts_cli.write_files(
            settings, args.directory, reload_pid=args.reload_pid, group=args.group
        )
    command = args.accounts_command
    if command == "add":
        return accounts_cli.add(
            settings,
            args.role,
            args.name,
            tenant=args.tenant,
            env_out=args.env_out,
            as_json=args.json,
        )
    if command == "revoke":
        return accounts_cli.revoke(settings, args.name)
    return accounts_cli.list_accounts(settings, include_revoked=args.all, as_json=args.json)
