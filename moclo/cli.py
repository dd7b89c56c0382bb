"""The `moclo` command: parses arguments, loads settings, calls one function. Nothing else."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from devices.catalogue import DEVICE_TYPES
from devices.topics import IDENTIFIER_RULE, is_identifier
from ingest.influx import InfluxError
from moclo.durations import parse_duration
from moclo.logs import configure_logging
from moclo.settings import ENVIRONMENT, Settings, SettingsError
from moclo.stack import ServerError

if TYPE_CHECKING:
    from simulators.faults import FaultRates
    from simulators.run import SimulationOptions

EPILOG = """\
environment (flags override them):
  MOCLO_MQTT_URL          broker, mqtt://[user:password@]host[:port]  (mqtt://127.0.0.1:1883)
  MOCLO_INFLUX_URL        InfluxDB 1.x, or 2.x/3.x via /write and /query  (http://127.0.0.1:8086)
  MOCLO_INFLUX_DB         database, or bucket on 2.x/3.x  (moclo)
  MOCLO_INFLUX_TOKEN      token for InfluxDB 2.x/3.x; environment only, never a flag,
                          so it does not show in `ps`
  MOCLO_TOPIC_PREFIX      first topic level(s)  (moclo)
  MOCLO_INGEST_CLIENT_ID  ingest's MQTT client id, which names its persistent session
"""


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fleet(text: str) -> dict[str, int]:
    from simulators.fleet import FleetError, parse_fleet

    try:
        return parse_fleet(text)
    except FleetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _faults(text: str) -> FaultRates:
    from simulators.faults import FaultRates

    try:
        return FaultRates.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _connections(text: str) -> int:
    """A number of shared connections, or 0 for one connection per device."""
    if text == "device":
        return 0
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError("write a number of connections (1 or more) or 'device'")


def _connection_flags(parser: argparse.ArgumentParser, *, influx: bool = True) -> None:
    group = parser.add_argument_group("connections (override the environment)")
    group.add_argument("--mqtt-url", help="MQTT broker (MOCLO_MQTT_URL)")
    if influx:
        group.add_argument("--influx-url", help="InfluxDB (MOCLO_INFLUX_URL)")
        group.add_argument("--influx-db", help="database or bucket (MOCLO_INFLUX_DB)")
    group.add_argument("--topic-prefix", help="topic prefix (MOCLO_TOPIC_PREFIX)")


def _fleet_flags(
    parser: argparse.ArgumentParser,
    *,
    devices: str,
    interval: str | None,
    incident_every: str | None,
) -> None:
    parser.add_argument(
        "--devices",
        type=_fleet,
        default=_fleet(devices),
        metavar="TYPE=N,...",
        help=f"the fleet, e.g. cow_tracker=50,thermostat=10 (default {devices})",
    )
    parser.add_argument("--tenant", default="demo-farm", help="tenant id (default demo-farm)")
    parser.add_argument(
        "--interval",
        type=_duration,
        default=_duration(interval) if interval else None,
        help="time between two readings of one device (default "
        f"{interval or 'each type its own: cows 30s, cars 5s, pacemakers 1m, …'})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed; the same seed gives the same readings (default: "
        "random, printed so the run can be repeated)",
    )
    parser.add_argument(
        "--incident-every",
        type=_duration,
        default=_duration(incident_every) if incident_every else None,
        metavar="DURATION",
        help="mean time between incidents per device (cow fever, heater failure), which "
        f"drive the alerts (default {incident_every or 'none'})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moclo",
        description="IoT telemetry for the mobile cloud: simulate devices, ingest their MQTT "
        "readings into InfluxDB, raise alerts.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one JSON object per log line, for log collectors",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="run everything on this machine: broker, database, ingest, simulators",
        description="Starts mosquitto and influxd as child processes when none answers at the "
        "configured URLs, then ingest and a simulated fleet. Ctrl-C stops it all.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".moclo"),
        help="where local servers keep config, data and logs (default .moclo)",
    )
    up.add_argument("--no-simulator", action="store_true", help="ingest only")
    up.add_argument(
        "--duration",
        type=_duration,
        default=None,
        help="stop by itself after this long (default: run until Ctrl-C)",
    )
    _fleet_flags(up, devices="cow_tracker=20,thermostat=5", interval="2s", incident_every="2m")
    _connection_flags(up)

    ingest = commands.add_parser(
        "ingest",
        help="consume telemetry from MQTT into InfluxDB and raise alerts",
        description="Subscribes (QoS 1, persistent session) to every telemetry topic, validates "
        "each reading, writes readings, rejections and alerts to InfluxDB in "
        "batches, and acknowledges a message only after it was stored. "
        "SIGTERM/Ctrl-C stops cleanly; a second one exits at once.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ingest.add_argument("--client-id", help="MQTT client id (MOCLO_INGEST_CLIENT_ID)")
    ingest.add_argument(
        "--batch",
        type=int,
        default=2000,
        help="messages per InfluxDB write, at most (default 2000)",
    )
    _connection_flags(ingest)

    simulate = commands.add_parser(
        "simulate",
        help="publish readings from a simulated fleet",
        description="Publishes plausible readings for a fleet of simulated devices from one "
        "thread: either the fleet given by --devices, or a scenario file (tenants, fleets, "
        "speed, seed and scripted events). Shipped scenarios: dairy_farm, cardiology_ward, "
        "smart_street, everything.",
    )
    simulate.add_argument(
        "--scenario",
        metavar="NAME|FILE",
        help="a shipped scenario's name or a scenario TOML file (its fleets replace --devices)",
    )
    _fleet_flags(
        simulate, devices="cow_tracker=50,thermostat=10", interval=None, incident_every=None
    )
    simulate.add_argument(
        "--duration",
        type=_duration,
        default=None,
        help="how much (simulated) time to cover (default 30s, or the scenario's own)",
    )
    simulate.add_argument(
        "--forever", action="store_true", help="ignore --duration; run until Ctrl-C"
    )
    simulate.add_argument(
        "--burst",
        action="store_true",
        help="simulated time: publish the --duration that ends now as fast as possible "
        "(a backfill)",
    )
    simulate.add_argument(
        "--faults",
        type=_faults,
        default=None,
        metavar="FAULT=RATE,...",
        help="misbehave on purpose, e.g. malformed_json=0.01,duplicate=0.02: malformed_json, "
        "schema_violation, out_of_range, clock_skew, duplicate, out_of_order, late, silence "
        "(rates per reading; counted in the summary)",
    )
    simulate.add_argument(
        "--connections",
        type=_connections,
        default=1,
        metavar="N|device",
        help="MQTT connections: N shared by the devices, device i on connection i mod N "
        "(gateway mode; default 1), or 'device': one per device with its own client id, as "
        "real devices connect",
    )
    simulate.add_argument(
        "--credentials",
        type=Path,
        metavar="FILE",
        help="with --connections device: a CSV file tenant,device_id,username,password, so "
        "each device logs in as itself",
    )
    simulate.add_argument(
        "--speed",
        type=float,
        default=None,
        help="simulated seconds per real second, e.g. 1440 for a day in a minute (default 1)",
    )
    simulate.add_argument("--qos", type=int, choices=(0, 1), default=1, help="default 1")
    simulate.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    simulate.add_argument(
        "--batch",
        type=int,
        default=1,
        metavar="N",
        help="readings per message, sent as a JSON array (1..1000, default 1)",
    )
    _connection_flags(simulate, influx=False)

    devices = commands.add_parser("devices", help="the device catalogue")
    device_commands = devices.add_subparsers(
        dest="devices_command", required=True, metavar="SUBCOMMAND"
    )
    listing = device_commands.add_parser("list", help="list the device types")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    schema = device_commands.add_parser("schema", help="print the JSON Schema of one reading")
    schema.add_argument("type", metavar="TYPE", help="device type, see `moclo devices list`")

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
        help="one device type (default: all), see `moclo devices list`",
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

    _alerts_parser(commands)
    return parser


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


def _alerts_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    _connection_flags(alerts)
    alert_commands = alerts.add_subparsers(dest="alerts_command", metavar="SUBCOMMAND")
    ack = alert_commands.add_parser(
        "ack",
        help="acknowledge an open alert: someone is on it",
        description="Looks the alert up in InfluxDB, publishes the acknowledgement to "
        "{prefix}/{tenant}/acks and waits until ingest publishes the `acknowledged` change. "
        "Exits 1 if the alert is unknown, resolved or already acknowledged, or if ingest does "
        "not confirm in time.",
    )
    ack.add_argument("id", type=_alert_id, metavar="ID", help="the alert's id (12 hex digits)")
    ack.add_argument(
        "--by",
        type=_alert_text("by"),
        default=None,
        metavar="NAME",
        help="who is on it (default: $USER, else 'unknown')",
    )
    ack.add_argument(
        "--note",
        type=_alert_text("note"),
        default="",
        metavar="TEXT",
        help="what is being done, up to 500 characters",
    )
    ack.add_argument(
        "--timeout",
        type=_duration,
        default=10.0,
        metavar="DURATION",
        help="how long to wait for ingest to confirm (default 10s)",
    )
    _connection_flags(ack)
    watch = alert_commands.add_parser(
        "watch",
        help="deprecated: use `moclo alerts --follow`",
        description="The same as `moclo alerts --follow`, kept for scripts.",
    )
    _alert_filter_flags(watch)
    _connection_flags(watch)
    # Flags given before the subcommand (`moclo alerts --tenant t watch`) must survive the
    # subcommand's defaults for the same flags, which argparse would write over them.
    shared = {action.dest for action in alerts._actions} - {"help"}
    for sub in (ack, watch):
        for action in sub._actions:
            if action.dest in shared:
                action.default = argparse.SUPPRESS


def _alert_filter_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", type=_alert_scope("tenant"), help="one tenant (default: all)")
    parser.add_argument(
        "--device", type=_alert_scope("device"), help="one device id (default: all)"
    )
    parser.add_argument(
        "--severity",
        choices=("info", "warning", "critical"),
        default="info",
        help="the least severity shown (default info: all)",
    )
    parser.add_argument(
        "--since",
        type=_duration,
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
    from moclo.alerts_cli import check_alert_id

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
        from moclo.alerts_cli import check_ack_text

        try:
            return check_ack_text(kind, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


def _positive(text: str) -> int:
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError("write a whole number, 1 or more")


def _settings(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name, None) for name in ENVIRONMENT if name != "influx_token"}
    if getattr(args, "client_id", None):
        flags["ingest_client_id"] = args.client_id
    return Settings.load(**flags)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(verbose=args.verbose, as_json=args.log_format == "json")
    try:
        try:
            return _dispatch(args)
        except BaseExceptionGroup as group:
            # A failing task under a TaskGroup arrives wrapped; show the user the cause.
            raise _first_cause(group) from None
    except SettingsError as exc:
        print(f"moclo: {exc}", file=sys.stderr)
        return 2
    except ConnectionError as exc:
        print(f"moclo: {exc}", file=sys.stderr)
        return 1
    except InfluxError as exc:
        print(f"moclo: {exc}", file=sys.stderr)
        return 1
    except ServerError as exc:
        print(f"moclo: {exc}", file=sys.stderr)
        return 1


def _first_cause(group: BaseExceptionGroup[BaseException]) -> BaseException:
    cause: BaseException = group
    while isinstance(cause, BaseExceptionGroup):
        cause = cause.exceptions[0]
    return cause


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "devices":
        return _devices(args)
    if args.command == "rules":
        return _rules(args)
    settings = _settings(args)
    if args.command == "simulate":
        return _simulate(args, settings)
    if args.command == "ingest":
        return _ingest(args, settings)
    if args.command == "up":
        return _up(args, settings)
    if args.command == "alerts":
        return _alerts(args, settings)
    raise AssertionError(args.command)


def _devices(args: argparse.Namespace) -> int:
    if args.devices_command == "list":
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "type": name,
                            "description": d.description,
                            "fields": list(d.reading.measurement_fields),
                        }
                        for name, d in DEVICE_TYPES.items()
                    ],
                    indent=2,
                )
            )
        else:
            width = max(map(len, DEVICE_TYPES))
            for name, device in DEVICE_TYPES.items():
                print(f"{name:<{width}}  {device.description}")
        return 0
    chosen = DEVICE_TYPES.get(args.type)
    if chosen is None:
        print(
            f"moclo: unknown device type {args.type!r}; known: {', '.join(DEVICE_TYPES)}",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(chosen.json_schema(), indent=2, ensure_ascii=False))
    return 0


def _alerts(args: argparse.Namespace, settings: Settings) -> int:
    from moclo import alerts_cli

    if args.alerts_command == "ack":
        return alerts_cli.acknowledge(
            settings,
            args.id,
            by=args.by or alerts_cli.default_name(),
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
    query = alerts_cli.AlertFilter(
        tenant=args.tenant,
        device_id=args.device,
        min_severity=args.severity,
        since_s=args.since,
        include_resolved=args.all,
    )
    if follow:
        return alerts_cli.follow_alerts(settings, query, as_json=args.json, count=args.count)
    return alerts_cli.list_alerts(settings, query, as_json=args.json)


def _rules(args: argparse.Namespace) -> int:
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


def _simulation_options(args: argparse.Namespace, duration_s: float | None) -> SimulationOptions:
    from simulators.run import SimulationOptions

    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    simulate_only = {}
    if args.command == "simulate":
        simulate_only = {
            "qos": args.qos,
            "burst": args.burst,
            "speed": args.speed or 1.0,
            "readings_per_message": args.batch,
            "faults": args.faults,
            "connections": max(1, args.connections),
            "per_device_connections": args.connections == 0,
        }
    return SimulationOptions(
        devices=args.devices,
        tenant=args.tenant,
        interval_s=args.interval,
        seed=seed,
        duration_s=duration_s,
        incident_every_s=args.incident_every,
        **simulate_only,
    )


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import replace

    from devices.topics import MAX_READINGS_PER_MESSAGE, TopicError
    from simulators.command import simulate_command
    from simulators.fleet import FleetError
    from simulators.scenario import ScenarioError, load_scenario

    if not 1 <= args.batch <= MAX_READINGS_PER_MESSAGE:
        print(f"moclo: --batch must be 1..{MAX_READINGS_PER_MESSAGE}", file=sys.stderr)
        return 2
    credentials: dict[str, tuple[str, str]] = {}
    if args.credentials:
        from simulators.credentials import CredentialsError, load_credentials

        if args.connections != 0:
            print("moclo: --credentials needs --connections device", file=sys.stderr)
            return 2
        try:
            credentials = load_credentials(args.credentials)
        except CredentialsError as exc:
            print(f"moclo: {exc}", file=sys.stderr)
            return 2
    if args.scenario:
        try:
            title, options = load_scenario(args.scenario)
        except ScenarioError as exc:
            print(f"moclo: {exc}", file=sys.stderr)
            return 2
        overrides: dict[str, object] = {"qos": args.qos, "readings_per_message": args.batch}
        if args.forever:
            overrides["duration_s"] = None
        elif args.duration:
            overrides["duration_s"] = args.duration
        if args.seed is not None:
            overrides["seed"] = args.seed
        if args.burst:
            overrides["burst"] = True
        if args.speed:
            overrides["speed"] = args.speed
        if args.faults:
            overrides["faults"] = args.faults
        if args.connections != 1:
            overrides["connections"] = max(1, args.connections)
            overrides["per_device_connections"] = args.connections == 0
    try:
        if args.scenario:
            options = replace(options, **overrides)  # type: ignore[arg-type]
        else:
            title = f"{sum(args.devices.values())} devices for tenant {args.tenant}"
            options = _simulation_options(args, None if args.forever else (args.duration or 30.0))
    except ValueError as exc:  # options that contradict each other, e.g. --faults with --batch
        print(f"moclo: {exc}", file=sys.stderr)
        return 2
    if credentials:
        options = replace(options, credentials=credentials)
    try:
        return simulate_command(settings, options, title=title, as_json=args.json)
    except (FleetError, TopicError) as exc:  # a fleet that cannot exist, e.g. a bad tenant
        print(f"moclo: {exc}", file=sys.stderr)
        return 2


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.service import IngestOptions, run_ingest
    from moclo.signals import install_stop_handlers

    if not 1 <= args.batch <= 30_000:
        # The broker's window must hold two batches, and MQTT 5 caps it at 65,535.
        print("moclo: --batch must be 1..30000", file=sys.stderr)
        return 2

    async def run() -> int:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        options = IngestOptions(
            batch_messages=args.batch, window=min(65_535, max(10_000, 2 * args.batch))
        )
        stats = await run_ingest(settings, stop, options=options)
        print(
            f"ingest stopped: {stats.messages} messages, {stats.readings_stored} readings "
            f"stored, {stats.rejected} rejected",
            file=sys.stderr,
        )
        return 0

    return asyncio.run(run())


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from moclo.up import UpOptions, run_up

    simulation = None if args.no_simulator else _simulation_options(args, None)
    return run_up(
        settings, UpOptions(data_dir=args.data_dir, simulation=simulation, duration_s=args.duration)
    )


if __name__ == "__main__":
    sys.exit(main())
