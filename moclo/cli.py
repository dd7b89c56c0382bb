"""The `moclo` command: parses arguments, loads settings, calls one function. Nothing else.

The top-level parser is here, the parsers of `up`, `ingest` and `serve` in `services_args.py`;
the other command groups keep their parser and the call they make in a module of their own:
`simulate_cli.py`, `devices_args.py`,
`accounts_args.py` (also `broker-auth` and `provision`), `rules_args.py`, `alerts_args.py`,
`command_args.py` (`command`, `commands`, `desired`), `notifier_args.py` (`notify run|test`,
the group that `notify_args.py` adds `check` to) and `notify_args.py` (`notify check`, `oncall`).
Shared argument helpers are in `args.py`. Whatever a command needs beyond argparse is imported
when it runs, so that `moclo --help` stays quick."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from importlib import metadata

from core.mqtt import MqttEndpoint
from core.settings import ENVIRONMENT, SECRETS, Settings, SettingsError, url_has_password
from moclo import (
    accounts_args,
    alerts_args,
    command_args,
    devices_args,
    engine_auth_cli,
    notifier_args,
    notify_args,
    query_args,
    rules_args,
    services_args,
    simulate_cli,
    tokens_args,
)
from moclo.logs import configure_logging
from moclo.stack import ServerError
from storage.influx import InfluxError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moclo",
        description="IoT telemetry for the mobile cloud: simulate devices, ingest their MQTT "
        "readings into InfluxDB, raise alerts.",
        epilog=services_args.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"moclo {_version()}")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one JSON object per log line, for log collectors",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    services_args.add_up(commands)
    services_args.add_ingest(commands)
    services_args.add_serve(commands)
    simulate_cli.add_parser(commands)
    devices_args.add_parser(commands)
    accounts_args.add_parser(commands)
    rules_args.add_parser(commands)
    alerts_args.add_parser(commands)
    command_args.add_parser(commands)
    query_args.add_parser(commands)
    tokens_args.add_parser(commands)
    notifier_args.add_parser(commands)  # `notify` with run, test and check
    notify_args.add_oncall(commands)
    engine_auth_cli.add_parser(commands)
    return parser


def _version() -> str:
    """The installed package's version (pyproject.toml is its one source)."""
    try:
        return metadata.version("moclo")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "(version unknown: not installed; `pip install -e .` records it)"


def _settings(args: argparse.Namespace) -> Settings:
    if _has_password(getattr(args, "mqtt_url", None)):
        # A flag shows in `ps` to every user of the machine.
        raise SettingsError(
            "--mqtt-url must not carry a password (it would show in `ps`): put it in "
            "MOCLO_MQTT_PASSWORD (or the whole URL in MOCLO_MQTT_URL)"
        )
    if url_has_password(getattr(args, "influx_url", None)):
        raise SettingsError(
            "--influx-url must not carry a password (it would show in `ps`): put the whole URL "
            "in MOCLO_INFLUX_URL, or, for InfluxDB 2.x/3.x, a token in MOCLO_INFLUX_TOKEN"
        )
    # Secrets come from the environment only: a flag would show in `ps`.
    flags = {name: getattr(args, name, None) for name in ENVIRONMENT if name not in SECRETS}
    if getattr(args, "client_id", None):
        flags["ingest_client_id"] = args.client_id
    return Settings.load(**flags)


def _has_password(url: str | None) -> bool:
    try:
        return bool(url and MqttEndpoint.from_url(url).password)
    except ValueError:
        return False  # a malformed URL is reported by Settings.load, with what is allowed


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
    except ValueError as exc:
        # Imported only now: the rules machinery is too slow to load for `moclo --help`.
        from ingest.alerts.rulesfile import RulesFileError
        from ingest.automations.file import AutomationsFileError
        from notify.file import NotifyFileError

        if isinstance(exc, NotifyFileError):
            print(f"moclo: the notify file has problems:\n{exc}", file=sys.stderr)
            print("moclo: the notify file is set by MOCLO_NOTIFY_FILE", file=sys.stderr)
            return 2

        if isinstance(exc, AutomationsFileError):
            print(f"moclo: the automations file has problems:\n{exc}", file=sys.stderr)
            print("moclo: the automations file is set by MOCLO_AUTOMATIONS_FILE", file=sys.stderr)
            return 2
        if not isinstance(exc, RulesFileError):
            raise
        # The message names the file; an unreadable one is a RulesFileError too.
        print(f"moclo: the rules file has problems:\n{exc}", file=sys.stderr)
        print(
            "moclo: the rules file is set by --rules or MOCLO_RULES_FILE; "
            "`moclo rules check FILE` checks one without starting ingest",
            file=sys.stderr,
        )
        return 2


def _first_cause(group: BaseExceptionGroup[BaseException]) -> BaseException:
    cause: BaseException = group
    while isinstance(cause, BaseExceptionGroup):
        cause = cause.exceptions[0]
    return cause


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "devices" and not devices_args.needs_settings(args):
        return devices_args.run(args, None)
    if args.command == "rules":
        return rules_args.run(args)
    if args.command in ("notify", "oncall") and not notify_args.needs_settings(args):
        return notify_args.run(args)
    settings = _settings(args)
    if args.command == "devices":
        return devices_args.run(args, settings)
    if args.command in ("accounts", "broker-auth", "provision"):
        return accounts_args.run(args, settings)
    if args.command == "simulate":
        return simulate_cli.run(args, settings)
    if args.command == "ingest":
        return _ingest(args, settings)
    if args.command == "up":
        return _up(args, settings)
    if args.command == "serve":
        return _serve(settings)
    if args.command == "alerts":
        return alerts_args.run(args, settings)
    if args.command in ("command", "commands", "desired"):
        return command_args.run(args, settings)
    if args.command == "query":
        return query_args.run(args, settings)
    if args.command == "tokens":
        return tokens_args.run(args, settings)
    if args.command == "notify":
        return notifier_args.run(args, settings)
    if args.command == "engine-auth":
        return engine_auth_cli.run(args, settings)
    raise AssertionError(args.command)


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.options import IngestOptions
    from ingest.service import run_ingest
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


def _serve(settings: Settings) -> int:
    from access.tokens import TokenStoreError
    from moclo.signals import install_stop_handlers
    from serve.server import bind, run_serve

    try:
        sock = bind(settings.serve_listen)
    except OSError as exc:
        print(
            f"moclo: cannot listen on {settings.serve_listen} ({exc.strerror}): choose another "
            "with --listen or MOCLO_SERVE_LISTEN",
            file=sys.stderr,
        )
        return 1

    async def run() -> int:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        await run_serve(
            settings, stop, sock=sock, on_ready=lambda url: print(f"dashboard: {url}", flush=True)
        )
        return 0

    try:
        return asyncio.run(run())
    except TokenStoreError as exc:
        print(f"moclo: {exc}", file=sys.stderr)
        return 1


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.rules_in_force import load_rulebook
    from moclo.up import UpOptions, run_up

    # Ingest would find a bad rules file too, but only after the local servers have started.
    load_rulebook(settings)
    simulation = None if args.no_simulator else simulate_cli.simulation_options(args, None)
    options = UpOptions(data_dir=args.data_dir, simulation=simulation, duration_s=args.duration)
    if args.workers != 2 and not args.engine:
        raise SettingsError(
            "--workers needs --engine rabbitmq: on Mosquitto, `moclo up` runs one ingest "
            "(see docs/performance.md#scale-out for --tenants and --share-group)"
        )
    if args.engine:
        from moclo.up_engine import run_up_engine

        return run_up_engine(settings, options, workers=args.workers)
    return run_up(settings, options)


if __name__ == "__main__":
    sys.exit(main())
