"""`moclo engine-auth`: the distributed engine's logins and ACL from the registry
(access/engine_auth.py) as a service of its own, for a cluster that `moclo up --engine` did not
start (docker-compose's `engine` profile, or your own RabbitMQ nodes)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from access.engine_auth import EngineAuth, serve_engine_auth
from core.settings import Settings
from moclo.args import Commands
from moclo.signals import install_stop_handlers

SECRET_VARIABLE = "MOCLO_ENGINE_AUTH_SECRET"
MIN_SECRET = 24

EPILOG = f"""\
examples:
  {SECRET_VARIABLE}=$(openssl rand -hex 24) moclo engine-auth --listen 0.0.0.0:8099
  then, in every RabbitMQ node's rabbitmq.conf (a file only RabbitMQ may read):
    auth_backends.1 = http
    auth_http.http_method = post
    auth_http.user_path = http://AUTH-HOST:8099/SECRET/user
    (and vhost_path, resource_path, topic_path the same way)

The secret is the URL's path: RabbitMQ sends no credentials of its own, so without it anyone
reaching the port could ask which logins exist. It comes from the environment only (a flag
shows in `ps`) and is never logged. The registry is MOCLO_REGISTRY; the topic prefix
MOCLO_TOPIC_PREFIX.
"""


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "engine-auth",
        help="answer RabbitMQ's HTTP auth backend from the registry (the engine's logins, ACL)",
        description="Answers the distributed engine's (RabbitMQ's) HTTP auth backend from the "
        "registry: the same logins and ACL as Mosquitto's generated files, and a client id "
        "must be its username. Runs until Ctrl-C or SIGTERM.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:8099",
        metavar="HOST:PORT",
        help="where RabbitMQ reaches it (default 127.0.0.1:8099; 0.0.0.0:8099 in a container)",
    )
    parser.add_argument("--registry", help="the registry (MOCLO_REGISTRY)")
    parser.add_argument("--topic-prefix", help="topic prefix (MOCLO_TOPIC_PREFIX)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    secret = os.environ.get(SECRET_VARIABLE, "")
    if len(secret) < MIN_SECRET or not secret.replace("-", "").replace("_", "").isalnum():
        print(
            f"moclo: set {SECRET_VARIABLE} to a random secret of at least {MIN_SECRET} "
            "letters, digits, - or _ (e.g. `openssl rand -hex 24`); RabbitMQ's config names "
            "it in the auth URLs",
            file=sys.stderr,
        )
        return 2
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print(f"moclo: --listen {args.listen!r} must look like HOST:PORT", file=sys.stderr)
        return 2
    auth = EngineAuth(settings.registry, prefix=settings.topic_prefix)
    with serve_engine_auth(auth, host=host, port=int(port), secret=secret) as url:
        listening = url.rsplit("/", 1)[0]  # without the secret
        print(f"moclo engine-auth: answering RabbitMQ at {listening}/… from {settings.registry}")
        asyncio.run(_until_stopped())
    print(f"moclo engine-auth: stopped ({sum(auth.refusals.values())} refusals)")
    return 0


async def _until_stopped() -> None:
    stop = asyncio.Event()
    install_stop_handlers(stop)
    await stop.wait()
