"""`moclo devices`' arguments: the catalogue (`types`, `schema`) and the registry (`add`,
`import`, `revoke`, `list`), and the call into `moclo/devices_cli.py`, imported when the
command runs. Secrets are never arguments: they are generated, and shown or written once."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.settings import Settings
from moclo.args import Commands

DEVICES_EPILOG = """\
examples:
  moclo devices types                          the device types of the catalogue
  moclo devices schema cow_tracker             JSON Schema of one reading
  moclo devices add demo-farm cow_tracker cow-0001
  moclo devices add demo-farm cow_tracker cow-0002 --credentials-out devices.csv
  moclo devices import fleet.csv --credentials-out devices.csv
  moclo devices import --scenario dairy_farm --credentials-out devices.csv
  moclo simulate --scenario dairy_farm --connections device --credentials devices.csv
  moclo devices revoke demo-farm cow-0002
  moclo devices list --tenant demo-farm

The registry is MOCLO_REGISTRY (.moclo/registry.sqlite). Every change rewrites the broker's
password and ACL files in MOCLO_BROKER_AUTH_DIR (default: `broker` beside the registry) and
reloads the local broker whose pid is in that folder's mosquitto.pid.
"""

REGISTRY_COMMANDS = ("add", "import", "revoke", "list")


def add_parser(commands: Commands) -> None:
    devices = commands.add_parser(
        "devices",
        help="the device catalogue, and the registered devices and their credentials",
        description="The catalogue's device types and their readings; registering devices, "
        "which issues each its MQTT login (a device may publish only its own telemetry topic), "
        "and revoking them.",
        epilog=DEVICES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = devices.add_subparsers(dest="devices_command", required=True, metavar="SUBCOMMAND")

    types = sub.add_parser("types", help="list the device types")
    types.add_argument("--json", action="store_true", help="machine-readable output")
    schema = sub.add_parser("schema", help="print the JSON Schema of one reading")
    schema.add_argument("type", metavar="TYPE", help="device type, see `moclo devices types`")

    _add_add(sub)
    _add_import(sub)

    revoke = sub.add_parser(
        "revoke",
        help="take a device's login back",
        description="Revokes a device: the broker refuses its login (and disconnects it, once "
        "reloaded) and ingest rejects its readings as unregistered_device.",
    )
    revoke.add_argument("tenant", metavar="TENANT")
    revoke.add_argument("device_id", metavar="DEVICE_ID")
    _registry_flags(revoke)

    listing = sub.add_parser("list", help="list the registered devices")
    listing.add_argument("--tenant", help="only this tenant's")
    listing.add_argument("--all", action="store_true", help="revoked ones too")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--registry", metavar="FILE", help="the registry (MOCLO_REGISTRY)")


def _add_add(sub: Commands) -> None:
    """`moclo devices add`: one device."""
    add = sub.add_parser(
        "add",
        help="register a device and issue its MQTT login",
        description="Registers a device and prints its MQTT username (TENANT.DEVICE_ID) and a "
        "generated password, once: only a hash is kept. With --credentials-out the password "
        "goes to that file instead of the terminal.",
    )
    add.add_argument("tenant", metavar="TENANT")
    add.add_argument("device_type", metavar="TYPE", help="see `moclo devices types`")
    add.add_argument("device_id", metavar="DEVICE_ID")
    _credentials_out(add, required=False)
    add.add_argument("--json", action="store_true", help="machine-readable output")
    _registry_flags(add)


def _add_import(sub: Commands) -> None:
    """`moclo devices import`: many devices, from a CSV file or a scenario."""
    bulk = sub.add_parser(
        "import",
        help="register many devices: a CSV file, or a scenario's fleet",
        description="Registers every device of a CSV file (first line tenant,device_type,"
        "device_id) or of a scenario's fleets, all or none, and appends their credentials to "
        "--credentials-out in the format `moclo simulate --credentials` reads.",
    )
    source = bulk.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", type=Path, metavar="FILE", help="CSV of devices")
    source.add_argument(
        "--scenario", metavar="NAME|FILE", help="a shipped scenario's name, or a scenario file"
    )
    _credentials_out(bulk, required=True)
    bulk.add_argument(
        "--skip-registered",
        action="store_true",
        help="leave devices that are already registered as they are (default: refuse all)",
    )
    bulk.add_argument("--json", action="store_true", help="machine-readable summary")
    _registry_flags(bulk)


def _credentials_out(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--credentials-out",
        type=Path,
        required=required,
        metavar="FILE",
        help="append the credentials to this CSV (tenant,device_id,username,password; created "
        "0600), the file `moclo simulate --connections device --credentials` reads",
    )


def _registry_flags(parser: argparse.ArgumentParser) -> None:
    # dest is the setting's name, so the CLI's settings loader takes them like other flags.
    parser.add_argument("--registry", metavar="FILE", help="the registry (MOCLO_REGISTRY)")
    parser.add_argument(
        "--topic-prefix", help="topic prefix, for the broker's ACL file (MOCLO_TOPIC_PREFIX)"
    )


def needs_settings(args: argparse.Namespace) -> bool:
    return args.devices_command in REGISTRY_COMMANDS


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    """One `moclo devices` subcommand; returns the exit status."""
    from moclo import devices_cli

    command = args.devices_command
    if command == "types":
        return devices_cli.list_types(as_json=args.json)
    if command == "schema":
        return devices_cli.print_schema(args.type)
    assert settings is not None
    if command == "add":
        return devices_cli.add(
            settings,
            args.tenant,
            args.device_type,
            args.device_id,
            credentials_out=args.credentials_out,
            as_json=args.json,
        )
    if command == "import":
        return devices_cli.import_devices(
            settings,
            file=args.file,
            scenario=args.scenario,
            credentials_out=args.credentials_out,
            skip_registered=args.skip_registered,
            as_json=args.json,
        )
    if command == "revoke":
        return devices_cli.revoke(settings, args.tenant, args.device_id)
    return devices_cli.list_devices(
        settings, tenant=args.tenant, include_revoked=args.all, as_json=args.json
    )
