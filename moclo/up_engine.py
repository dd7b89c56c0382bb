"""`moclo up --engine rabbitmq`: the pipeline on the distributed engine, on one machine, for
people to try it (docs/scale.md, "Try it").

Instead of Mosquitto: a local 3-node RabbitMQ cluster (moclo/cluster.py) whose logins and ACL
come from the registry through the auth service (access/engine_auth.py), W ingest workers
consuming the telemetry's partitions (worker I at node I mod 3, each with its own ingest
login, as the engine admits one connection per login), serve at the last node, and the
simulated devices spread over the three nodes, each logged in as itself. Everything but the
cluster's start is `moclo up`'s (moclo/up.py). Everything speaks MQTT 3.1.1: RabbitMQ 3.10
drops MQTT 5 clients.

Ctrl-C stops the simulator and the workers first, then the cluster's nodes and our own epmd,
then the auth service and InfluxDB: nothing of the cluster is left running.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

from pydantic import SecretStr

from access.engine_auth import EngineAuth, serve_engine_auth
from access.engine_revocation import closing_revoked_logins
from access.registry import Registry
from core.settings import Settings
from moclo.cluster import RabbitCluster
from moclo.local_access import INGEST_ACCOUNT, LocalAccess, provision
from moclo.up import EngineParts, UpOptions, run_stack
from moclo.up_servers import local_ports, say, start_database

ENGINES = ("rabbitmq",)  # NATS: see docs/decisions/0001-distributed-engine.md for why not


def run_up_engine(settings: Settings, options: UpOptions, *, workers: int = 2) -> int:
    """Starts the cluster, InfluxDB (unless one answers), the workers, serve and the
    simulator; runs until Ctrl-C or `options.duration_s`; stops everything it started."""
    if workers < 1:
        raise SystemExit("moclo up: --workers must be at least 1")
    settings = settings.model_copy(update={"mqtt_protocol": "3.1.1"})
    with ExitStack() as servers:
        say("moclo up: starting the engine (3 RabbitMQ nodes: up to about 30 s)…")
        access = provision(settings, options.data_dir, options.simulation)
        logins = [access.ingest_login, *_worker_logins(access, workers)]
        auth = EngineAuth(access.registry, prefix=settings.topic_prefix)
        auth_url = servers.enter_context(serve_engine_auth(auth))
        cluster = RabbitCluster(options.data_dir / "engine", auth_url=auth_url)
        servers.callback(cluster.stop)  # first on the stack's way out: before the auth service
        cluster.start()
        # A login revoked while connected is cut off on every node, not only refused next time.
        servers.enter_context(closing_revoked_logins(auth, cluster.close_user_connections))
        notes = [
            f"  Engine       RabbitMQ {node.node}  {node.mqtt_url}  amqp {node.ports.amqp}"
            for node in cluster.nodes
        ]
        notes.append(
            f"               logins and ACL from {access.registry}; data and logs in "
            f"{cluster.directory}"
        )
        updates: dict[str, str] = {}
        start_database(settings, options.data_dir, servers, notes, updates)
        local_ports(settings, options.data_dir, updates)
        updates["mqtt_url"] = cluster.nodes[0].mqtt_url  # where the simulator starts
        settings = settings.model_copy(update=updates)
        parts = _parts(settings, access, cluster, logins)
        notes.append(
            f"  Workers      {workers}, over {settings.engine_partitions} partitions "
            "(each consumed by one worker at a time; a standby takes over)"
        )
        return asyncio.run(run_stack(settings, options, notes, access, parts))


def _worker_logins(access: LocalAccess, workers: int) -> list[tuple[str, str]]:
    """Fresh logins for workers 1 … W-1 (worker 0 has `moclo up`'s ingest account)."""
    registry = Registry(access.registry)
    names = {account.name for account in registry.accounts()}
    logins = []
    for index in range(1, workers):
        name = f"{INGEST_ACCOUNT}-{index}"
        if name in names:
            registry.revoke_account(name)  # its secret lived in a previous run's memory only
        credentials = registry.add_account("ingest", name)
        logins.append((credentials.username, credentials.password))
    return logins


def _parts(
    settings: Settings, access: LocalAccess, cluster: RabbitCluster, logins: list[tuple[str, str]]
) -> EngineParts:
    nodes = cluster.nodes
    workers = []
    for index, (username, password) in enumerate(logins):
        node = nodes[index % len(nodes)]
        # Its own node first; the others if that one is gone (ingest tries them in order).
        order = nodes[index % len(nodes) :] + nodes[: index % len(nodes)]
        workers.append(
            settings.model_copy(
                update={
                    "mqtt_url": node.mqtt_url,
                    "mqtt_username": username,
                    "mqtt_password": SecretStr(password),
                    "registry": str(access.registry),
                    "engine_url": "amqp://" + ",".join(f"{n.host}:{n.ports.amqp}" for n in order),
                    "engine_worker": f"{index}/{len(logins)}",
                    # spool_dir stays shared: each worker's spool is a folder of its login,
                    # and `partitions/` holds the partitions' snapshots a new owner restores.
                    # One health endpoint (worker 0's): the others would want the same port.
                    "http_listen": settings.http_listen if index == 0 else "off",
                }
            )
        )
    serve = access.for_serve(settings).model_copy(update={"mqtt_url": nodes[-1].mqtt_url})
    return EngineParts(
        workers=workers,
        serve=serve,
        nodes=tuple((node.host, node.ports.mqtt) for node in nodes),
    )
