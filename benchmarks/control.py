"""The engine's control queue against ingest on Mosquitto, in one run: N command requests
through the command gateway, timed from the first request published to the last `sent`
announced on command-status, and the CPU the gateway's process spent per request.

- engine: the 3-node RabbitMQ cluster, one `moclo ingest` worker (it holds the control
  queue); an operator's `~commands` login publishes the requests at r1 (MQTT 3.1.1), a serve
  login at r1 reads the statuses;
- Mosquitto: one `moclo ingest` on an open Mosquitto, the same registry and requests.

Each request is checked against the registry, recorded in `moclo_commands`, sent to its light
(none is connected: a command waits in the broker, as for a device offline) and announced
`sent`: one pass through the gateway per request (docs/scale.md, "The control queue").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from access.engine_auth import EngineAuth, serve_engine_auth
from access.registry import DeviceSpec, Registry
from benchmarks.alerts_stack import BenchmarkFailed, local_servers
from benchmarks.ingest_procfs import cpu_seconds
from benchmarks.machine import machine, write_results
from moclo.cluster import RabbitCluster

PREFIX = "moclo"  # the engine auth's topic prefix
TENANT = "bench-home"  # the published run's; a test's run has its own
OPERATOR = "olga"


class Statuses:
    """The distinct command ids announced `sent` on the tenant's command-status."""

    def __init__(self, url: tuple[str, int], login: tuple[str, str] | None, tenant: str) -> None:
        self.sent: set[str] = set()
        self._lock = threading.Lock()
        self.client = _client(login, f"status-{os.getpid()}")
        subscribed = threading.Event()
        self.client.on_message = self._keep
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(
            f"{PREFIX}/{tenant}/command-status/+", qos=1
        )
        self.client.connect(*url)
        self.client.loop_start()
        if not subscribed.wait(15):
            raise BenchmarkFailed("the status watcher did not subscribe")

    def _keep(self, c: object, u: object, message: paho.MQTTMessage) -> None:
        update = orjson.loads(message.payload)
        if update.get("status") == "sent":
            with self._lock:
                self.sent.add(str(update["id"]))

    def count(self) -> int:
        with self._lock:
            return len(self.sent)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _client(login: tuple[str, str] | None, fallback_id: str) -> paho.Client:
    """MQTT 3.1.1 (the engine drops 5); on the engine a login's client id is its username."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=login[0] if login else fallback_id,
        protocol=MQTTProtocolVersion.MQTTv311,
    )
    if login is not None:
        client.username_pw_set(*login)
    client.max_inflight_messages_set(100)
    return client


def requests(n: int, run: str) -> list[bytes]:
    return [orjson.dumps({"id": f"{run}-{i}", "device": f"light-{i}", "name": "switch",
                          "args": {"state": "on"}}) for i in range(n)]  # fmt: skip


def start_ingest(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moclo"), "ingest"],
            env={k: v for k, v in os.environ.items() if not k.startswith("MOCLO_")} | env,
            stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
        )  # fmt: skip
    until(lambda: " ingesting " in log.read_text(errors="replace"), process, log, "ingest", 60)
    return process


def until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, what: str, s: float
) -> None:
    deadline = time.monotonic() + s
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise BenchmarkFailed(f"{what} not ready: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.01)  # a poll's resolution, not a synchronisation


@dataclass(frozen=True)
class Run:
    """One run's registry (its lights and accounts), tenant, database server and folder."""

    registry: Registry
    tenant: str
    influx_url: str
    workdir: Path
    requests: int


def one_path(
    run: Run,
    name: str,
    env: dict[str, str],
    broker: tuple[str, int],
    logins: tuple[tuple[str, str] | None, tuple[str, str] | None],
    broker_cpu: Callable[[], float],
    account: str,
) -> dict[str, Any]:
    """Starts `moclo ingest` with `env`, publishes the requests as the operator; the seconds
    to the last `sent`, and the CPU of the gateway's process and of the broker (all three
    nodes on the engine)."""
    n, log = run.requests, run.workdir / f"{name}-ingest.log"
    env = env | {"MOCLO_REGISTRY": str(run.registry.path), "MOCLO_TOPIC_PREFIX": PREFIX,
                 "MOCLO_INGEST_TENANTS": run.tenant, "MOCLO_HTTP_LISTEN": "off",
                 "MOCLO_UNREGISTERED": "off", "MOCLO_INFLUX_URL": run.influx_url,
                 "MOCLO_INFLUX_DB": f"control_{name}_{run.tenant.replace('-', '_')}",
                 "MOCLO_SPOOL_DIR": str(run.workdir / f"spool-{name}")}  # fmt: skip
    process = start_ingest(env, log)
    asker, reader = logins
    statuses = Statuses(broker, reader, run.tenant)
    publisher = _client(asker, f"asker-{os.getpid()}")
    publisher.connect(*broker)
    publisher.loop_start()
    topic = f"{PREFIX}/{run.tenant}/command-requests/{account}"
    try:
        broker0 = broker_cpu()
        cpu0, start = cpu_seconds(process.pid), time.monotonic()
        infos = [publisher.publish(topic, body, qos=1) for body in requests(n, name)]
        for info in infos:
            info.wait_for_publish(60)
        until(lambda: statuses.count() >= n, process, log, f"{name}: {n} sent", 300)
        seconds, cpu = time.monotonic() - start, cpu_seconds(process.pid) - cpu0
        broker_s = broker_cpu() - broker0
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        statuses.close()
        process.terminate()
        process.wait(30)
    return {"path": name, "requests": n, "seconds": seconds, "per_s": n / seconds,
            "cpu_us_per_request": cpu / n * 1e6,
            "broker_cpu_us_per_request": broker_s / n * 1e6}  # fmt: skip


def _pid_of(name: str, workdir: Path) -> int:
    """The pid of this benchmark's `name` server: its command line names its config file,
    which is in `workdir` (other people's servers on this machine are not)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if argv and argv[0].endswith(name) and any(str(workdir) in a for a in argv):
                return int(proc.name)
    raise BenchmarkFailed(f"no {name} process of {workdir} found")


def measure(workdir: Path, n: int) -> dict[str, Any]:
    """Both paths on servers and a cluster of its own."""
    registry = Registry(workdir / "registry.sqlite")
    with local_servers(workdir) as servers:
        mosquitto = (servers.mqtt_url, _pid_of("mosquitto", workdir))
        auth = EngineAuth(registry.path, prefix=PREFIX, check_every_s=0.0)
        with serve_engine_auth(auth) as auth_url:
            cluster = RabbitCluster(workdir / "cluster", auth_url=auth_url)
            try:
                cluster.start()
                run = Run(registry, TENANT, servers.influx_url, workdir, n)
                return both_paths(run, mosquitto, cluster)
            finally:
                cluster.stop()


def both_paths(run: Run, mosquitto: tuple[str, int], cluster: RabbitCluster) -> dict[str, Any]:
    """Mosquitto's path (its URL and pid), then the engine's, with the run's registry, which
    must be the one `cluster`'s auth service reads."""
    registry, n = run.registry, run.requests
    registry.add_devices([DeviceSpec(run.tenant, "light", f"light-{i}") for i in range(n)])
    suffix = run.tenant.removeprefix("bench-")
    operator = registry.add_account("operator", f"{OPERATOR}-{suffix}", tenant=run.tenant)
    ingest = registry.add_account("ingest", f"ingest-{suffix}")
    serve = registry.add_account("serve", f"serve-{suffix}")
    url, pid = mosquitto
    host, port = url.removeprefix("mqtt://").split(":")
    rows = [one_path(run, "mosquitto", {"MOCLO_MQTT_URL": url}, (host, int(port)), (None, None),
                     lambda: cpu_seconds(pid), operator.username)]  # fmt: skip
    r1 = cluster.nodes[0]
    env = {"MOCLO_MQTT_URL": r1.mqtt_url, "MOCLO_MQTT_USERNAME": ingest.username,
           "MOCLO_MQTT_PASSWORD": ingest.password,
           "MOCLO_ENGINE_URL": f"amqp://127.0.0.1:{r1.ports.amqp}"}  # fmt: skip
    asker = (f"{operator.username}~commands", operator.password)
    nodes = [node.pid for node in cluster.nodes if node.pid is not None]
    logins = (asker, (serve.username, serve.password))
    broker = ("127.0.0.1", r1.ports.mqtt)

    def nodes_cpu() -> float:
        return sum(cpu_seconds(p) for p in nodes)

    rows.append(one_path(run, "engine", env, broker, logins, nodes_cpu, operator.username))
    return {"rows": rows, "ratio": rows[1]["seconds"] / rows[0]["seconds"]}


def report(figures: dict[str, Any], command: str) -> str:
    lines = [
        "# The control queue: command requests through the gateway, engine against Mosquitto",
        "",
        f"{figures['machine']}; load average {figures['load']:.1f} at the start.",
        "",
        f"Reproduce: `{command}`",
        "",
        "| path | requests | to the last `sent` | requests/s | gateway process CPU per request "
        "| broker CPU per request |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in figures["rows"]:
        lines.append(f"| {row['path']} | {row['requests']:,} | {row['seconds']:.2f} s | "
                     f"{row['per_s']:,.0f} | {row['cpu_us_per_request']:,.0f} µs | "
                     f"{row['broker_cpu_us_per_request']:,.0f} µs |")  # fmt: skip
    lines += ["", f"Ratio engine / Mosquitto (time): **{figures['ratio']:.2f}**."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.control",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="example: python -m benchmarks.control --requests 2000 "
        "--out benchmarks/results/control.md",
    )
    parser.add_argument("--requests", type=int, default=2_000, help="command requests per path")
    parser.add_argument("--out", default="-", help="the report's file (-: stdout)")
    parser.add_argument("--json", default=None, help="also the raw figures, as JSON, here")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="moclo-control-") as tmp:
        figures = measure(Path(tmp), args.requests)
    figures |= {"machine": machine(), "load": load}
    command = " ".join(["python -m benchmarks.control", *(argv or sys.argv[1:])])
    write_results(figures, report(figures, command), out=args.out, json_path=args.json)


if __name__ == "__main__":
    main()
