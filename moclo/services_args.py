"""The parsers of the commands that run moclo's services: `up`, `ingest` and `serve`."""

from __future__ import annotations

import argparse
from pathlib import Path

from moclo import simulate_cli, tokens_args
from moclo.args import Commands, connection_flags, duration
from moclo.settings_doc import epilog as settings_epilog

# The environment variables, rendered from the Settings declarations like docs/configuration.md.
EPILOG = settings_epilog()


def add_up(commands: Commands) -> None:
    """`moclo up`: the local servers, ingest and a simulated fleet."""
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
        "--engine",
        choices=("rabbitmq",),
        help="instead of Mosquitto, a local 3-node cluster of the distributed engine (RabbitMQ "
        "3.10: its MQTT and consistent-hash plugins, logins from the registry), with ingest "
        "workers over its partitions and everything on MQTT 3.1.1; takes about 30 s to start. "
        "E.g. `moclo up --engine rabbitmq --workers 3`; see docs/scale.md",
    )
    up.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="with --engine: ingest workers sharing the partitions (default 2)",
    )
    up.add_argument(
        "--duration",
        type=duration,
        default=None,
        help="stop by itself after this long (default: run until Ctrl-C)",
    )
    rules_flag(up)
    simulate_cli.fleet_flags(
        up, devices="cow_tracker=20,thermostat=5", interval="2s", incident_every="2m"
    )
    connection_flags(up)


def add_ingest(commands: Commands) -> None:
    """`moclo ingest`."""
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
    ingest.add_argument(
        "--client-id",
        help="MQTT client id, which names its session and spool folder (MOCLO_INGEST_CLIENT_ID; "
        "default: its MQTT username, else moclo-ingest). moclo's brokers replace it with the "
        "username anyway: one connection per login, so one account per ingest",
    )
    ingest.add_argument(
        "--tenants",
        dest="ingest_tenants",
        metavar="T1,T2",
        help="ingest only these tenants' devices, so that several ingests can split a fleet; "
        "each device always reaches the same one (MOCLO_INGEST_TENANTS)",
    )
    ingest.add_argument(
        "--share-group",
        dest="ingest_share_group",
        metavar="GROUP",
        help="share the telemetry with the other ingests of GROUP (an MQTT 5 shared "
        "subscription; give each its own account, or on a broker that keeps client ids, its "
        "own --client-id); such an ingest stores and validates "
        "but judges no alert rules (MOCLO_INGEST_SHARE_GROUP)",
    )
    ingest.add_argument(
        "--engine-url",
        dest="engine_url",
        metavar="amqp://HOST:PORT[,…]",
        help="consume the telemetry's partitions from the distributed engine (RabbitMQ) "
        "instead of subscribing over MQTT, with ingest's MQTT login; alert rules are judged "
        "(MOCLO_ENGINE_URL). E.g. two workers: `moclo ingest --engine-url "
        "amqp://r1:5672,r2:5672 --engine-worker 0/2` and `… --engine-worker 1/2`; see "
        "docs/scale.md",
    )
    ingest.add_argument(
        "--engine-worker",
        dest="engine_worker",
        metavar="I/W",
        help="on the engine, this worker's number and the number of workers (0/W … W-1/W; "
        "MOCLO_ENGINE_WORKER, default 0/1)",
    )
    ingest.add_argument(
        "--engine-partitions",
        dest="engine_partitions",
        type=int,
        metavar="P",
        help="on the engine, how many partitions the telemetry is spread over, the same for "
        "every worker (MOCLO_ENGINE_PARTITIONS, default 4)",
    )
    ingest.add_argument(
        "--batch",
        type=int,
        default=2000,
        help="messages per InfluxDB write, at most (default 2000)",
    )
    rules_flag(ingest)
    connection_flags(ingest)


def add_serve(commands: Commands) -> None:
    """`moclo serve`."""
    serve = commands.add_parser(
        "serve",
        help="the dashboard and the HTTP API: devices, time series, alerts, live",
        description="Serves the web dashboard at / and the HTTP API under /api (OpenAPI "
        "description at /api/openapi.json): devices and their newest reading, time series with "
        "the parameters of `moclo query`, alerts, and a live stream (Server-Sent Events) of "
        "alert changes and readings. Reads InfluxDB; subscribes to the broker for the live "
        "parts. Needs `moclo ingest` running for there to be anything to show. Every /api "
        "endpoint needs a token (`moclo tokens create`), kept in the registry.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--listen",
        dest="serve_listen",
        metavar="HOST:PORT",
        help="where to serve (MOCLO_SERVE_LISTEN, default 127.0.0.1:8080); 0.0.0.0:8080 to "
        "be reached from other machines",
    )
    tokens_args.registry_flag(serve)
    connection_flags(serve)


def rules_flag(parser: argparse.ArgumentParser) -> None:
    # dest is the setting's name, so `_settings` passes it to Settings.load like the others.
    parser.add_argument(
        "--rules",
        dest="rules_file",
        metavar="FILE",
        help="alert rules file (TOML) over each device type's defaults; check it with "
        "`moclo rules check` (MOCLO_RULES_FILE)",
    )
