"""`moclo simulate`: its flags, and the fleet flags it shares with `moclo up`, turned into
`SimulationOptions`. The simulators are imported only when a command runs, so that
`moclo --help` stays quick."""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.settings import Settings
from moclo.args import Commands, connection_flags, duration

if TYPE_CHECKING:
    from simulators.downlink import CommandFaults
    from simulators.faults import FaultRates
    from simulators.run import SimulationOptions


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


def _command_faults(text: str) -> CommandFaults:
    from simulators.downlink import CommandFaults

    try:
        return CommandFaults.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _connections(text: str) -> int:
    """A number of shared connections, or 0 for one connection per device."""
    if text == "device":
        return 0
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError("write a number of connections (1 or more) or 'device'")


def fleet_flags(
    parser: argparse.ArgumentParser,
    *,
    devices: str,
    interval: str | None,
    incident_every: str | None,
) -> None:
    """The simulated fleet's flags, with this command's defaults."""
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
        type=duration,
        default=duration(interval) if interval else None,
        help="time between two readings of one device, of every type (blood-pressure meters "
        "too, which otherwise measure mornings and evenings) (default "
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
        type=duration,
        default=duration(incident_every) if incident_every else None,
        metavar="DURATION",
        help="mean time between incidents per device (cow fever, heater failure), which "
        f"drive the alerts (default {incident_every or 'none'})",
    )


def add_parser(commands: Commands) -> None:
    """Adds `moclo simulate` to the top-level subcommands."""
    simulate = commands.add_parser(
        "simulate",
        help="publish readings from a simulated fleet",
        description="Publishes plausible readings for a fleet of simulated devices from one "
        "thread: either the fleet given by --devices, or a scenario file (tenants, fleets, "
        "speed, seed and scripted events). Shipped scenarios: dairy_farm, cardiology_ward, "
        "smart_street, everything, alert_tour, commuter_home.",
        epilog="examples:\n"
        "  moclo simulate --devices car=1,light=2 --obey --forever\n"
        "      devices that obey commands and desired state (lock the car, switch the light)\n"
        "  moclo simulate --devices thermostat=20 --command-faults reject=0.1,ignore=0.1\n"
        "      some commands rejected, some never answered (moclo marks them expired)\n"
        "  moclo simulate --scenario dairy_farm --connections device --credentials devices.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    simulate.add_argument(
        "--scenario",
        metavar="NAME|FILE",
        help="a shipped scenario's name or a scenario TOML file (its fleets replace --devices)",
    )
    fleet_flags(
        simulate, devices="cow_tracker=50,thermostat=10", interval=None, incident_every=None
    )
    simulate.add_argument(
        "--duration",
        type=duration,
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
    _misbehaviour_flags(simulate)
    _connections_flags(simulate)
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
    connection_flags(simulate, influx=False)


def _misbehaviour_flags(parser: argparse.ArgumentParser) -> None:
    """Faults on purpose in the readings, and obeying (or not quite) the downlink."""
    parser.add_argument(
        "--faults",
        type=_faults,
        default=None,
        metavar="FAULT=RATE,...",
        help="misbehave on purpose, e.g. malformed_json=0.01,duplicate=0.02: malformed_json, "
        "schema_violation, out_of_range, clock_skew, duplicate, out_of_order, late, silence "
        "(rates per reading; counted in the summary)",
    )
    parser.add_argument(
        "--obey",
        action="store_true",
        help="devices subscribe to their own commands and desired state and obey them (car, "
        "smart_meter, thermostat, fridge, pacemaker, light): they answer each command once, "
        "answer `expired` past its expiry, and report what they applied; see docs/acting.md",
    )
    parser.add_argument(
        "--command-faults",
        type=_command_faults,
        default=None,
        metavar="FAULT=RATE,...",
        help="devices that obey misbehave on commands, e.g. reject=0.1,ignore=0.1: reject "
        "answers `rejected`, ignore answers nothing (rates per command; implies --obey)",
    )


def _connections_flags(parser: argparse.ArgumentParser) -> None:
    """How the devices reach the broker: shared connections, or one each with its own login."""
    parser.add_argument(
        "--connections",
        type=_connections,
        default=1,
        metavar="N|device",
        help="MQTT connections: N shared by the devices, device i on connection i mod N "
        "(gateway mode; default 1), or 'device': one per device with its own client id, as "
        "real devices connect",
    )
    parser.add_argument(
        "--credentials",
        type=Path,
        metavar="FILE",
        help="with --connections device: a CSV file tenant,device_id,username,password, so "
        "each device logs in as itself",
    )
    parser.add_argument(
        "--spread-over",
        type=_nodes,
        default=(),
        metavar="HOST:PORT,…",
        help="with --connections device: a cluster's MQTT listeners, device i at the i-th "
        "mod n (e.g. the engine's three nodes: r1:1883,r2:1883,r3:1883); the login and TLS are "
        "--mqtt-url's",
    )


def _nodes(text: str) -> tuple[tuple[str, int], ...]:
    """An argparse type: `host:port[,host:port…]`."""
    nodes = []
    for item in text.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise argparse.ArgumentTypeError(f"{item!r}: write HOST:PORT, e.g. r1:1883")
        nodes.append((host, int(port)))
    return tuple(nodes)


def simulation_options(args: argparse.Namespace, duration_s: float | None) -> SimulationOptions:
    """The fleet of `moclo simulate` or `moclo up` from their flags (a random seed if none)."""
    from simulators.run import SimulationOptions

    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    # `moclo up`'s devices obey: the demo's dashboard can lock its cars and switch its lights.
    simulate_only: dict[str, Any] = {"obey": True}
    if args.command == "simulate":
        simulate_only = {
            "qos": args.qos,
            "burst": args.burst,
            "speed": args.speed or 1.0,
            "readings_per_message": args.batch,
            "faults": args.faults,
            "connections": max(1, args.connections),
            "per_device_connections": args.connections == 0,
            "obey": args.obey,
            "command_faults": args.command_faults,
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


def run(args: argparse.Namespace, settings: Settings) -> int:
    """`moclo simulate`; returns the exit status (2: arguments that cannot work together)."""
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
        from access.credentials import CredentialsError, load_credentials

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
        overrides = _scenario_overrides(args)
    try:
        if args.scenario:
            options = replace(options, **overrides)  # type: ignore[arg-type]
        else:
            title = f"{sum(args.devices.values())} devices for tenant {args.tenant}"
            options = simulation_options(args, None if args.forever else (args.duration or 30.0))
    except ValueError as exc:  # options that contradict each other, e.g. --faults with --batch
        print(f"moclo: {exc}", file=sys.stderr)
        return 2
    if credentials:
        options = replace(options, credentials=credentials)
    if args.spread_over:
        if args.connections != 0:
            print("moclo: --spread-over needs --connections device", file=sys.stderr)
            return 2
        options = replace(options, nodes=args.spread_over)
    try:
        return simulate_command(settings, options, title=title, as_json=args.json)
    except (FleetError, TopicError) as exc:  # a fleet that cannot exist, e.g. a bad tenant
        print(f"moclo: {exc}", file=sys.stderr)
        return 2


def _scenario_overrides(args: argparse.Namespace) -> dict[str, object]:
    """What the flags change of a scenario's own options: only those that were given."""
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
    if args.obey:
        overrides["obey"] = True
    if args.command_faults:
        overrides["command_faults"] = args.command_faults
    if args.connections != 1:
        overrides["connections"] = max(1, args.connections)
        overrides["per_device_connections"] = args.connections == 0
    return overrides
