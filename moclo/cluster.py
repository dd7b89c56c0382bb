"""A local RabbitMQ cluster as child processes: the distributed engine of
docs/decisions/0001-distributed-engine.md, for the tests' `engine` fixture (and for people
trying it, once `moclo up` can start it).

Three nodes (`r1@localhost` … `r3@localhost`) on loopback ports below 32768 (Erlang's
distribution also opens outgoing connections from the ephemeral range 32768–60999, where a
listener of ours would collide), each with the MQTT plugin, the consistent-hash exchange and
RabbitMQ's HTTP auth backend pointed at access/engine_auth.py, which answers from the
registry. Nothing is shared with a system RabbitMQ: an epmd of our own on its own port
(`ERL_EPMD_PORT`), our own Erlang cookie, data and config in the cluster's directory.

Starting: r1 first, then r2 and r3 together; they find r1 by RabbitMQ's classic peer discovery
and join it while booting (a node that found nobody would start a cluster of its own, so r1
must be up first). Ready means each node logged "Server startup complete", its MQTT port
answers, and r1 counts three running nodes.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from moclo.stack import LocalServer, ServerError, find_executable, free_port, port_open

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")  # Debian's; /usr/sbin's wrappers `su rabbitmq`
PLUGINS = ("rabbitmq_mqtt", "rabbitmq_consistent_hash_exchange", "rabbitmq_auth_backend_http")


class Epmd(LocalServer):
    """Erlang's port mapper, ours alone: the nodes and rabbitmqctl find each other here."""

    name = "epmd"

    def command(self) -> list[str]:
        # Without -address it listens on every interface: other machines would learn the
        # nodes' names and distribution ports (which themselves listen on loopback only).
        epmd = find_executable("epmd", package="erlang-base")
        return [epmd, "-port", str(self.port), "-address", self.host]

    def write_config(self) -> None:
        """epmd has no config file."""

    def is_ready(self) -> bool:
        return port_open(self.host, self.port)


@dataclass(frozen=True, slots=True)
class NodePorts:
    amqp: int
    mqtt: int
    dist: int


class RabbitNode(LocalServer):
    name = "rabbitmq"

    def __init__(
        self, directory: Path, *, node: str, ports: NodePorts, seed: str, env: dict[str, str]
    ) -> None:
        super().__init__(directory, ports.mqtt)
        self.node = node  # Erlang node name, e.g. r1@localhost
        self.ports = ports
        self.seed = seed  # the node every other one joins
        self._shared_env = env

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{self.host}:{self.ports.mqtt}"

    @property
    def amqp_url(self) -> str:
        return f"amqp://{self.host}:{self.ports.amqp}/%2F"

    def command(self) -> list[str]:
        return [str(RABBITMQ_BIN / "rabbitmq-server")]

    def environment(self) -> dict[str, str]:
        d = self.directory
        return {
            **os.environ,
            **self._shared_env,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": self.host,
            "RABBITMQ_NODE_PORT": str(self.ports.amqp),
            "RABBITMQ_DIST_PORT": str(self.ports.dist),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            # `exec erl` instead of a shell that traps signals: our pid is the node's, so
            # SIGTERM stops it cleanly and SIGKILL really kills it.
            "RABBITMQ_ALLOW_INPUT": "true",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                "-noinput -kernel inet_dist_use_interface {127,0,0,1}"
            ),
        }

    def write_config(self) -> None:
        (self.directory / "enabled_plugins").write_text(f"[{','.join(PLUGINS)}].\n")
        auth = self._shared_env["MOCLO_ENGINE_AUTH_URL"]
        # The auth service's URL holds its secret path (access/engine_auth.py): owner only.
        self.config_path.touch(mode=0o600)
        self.config_path.chmod(0o600)
        self.config_path.write_text(
            "\n".join(
                [
                    "listeners.tcp.default = " + f"{self.host}:{self.ports.amqp}",
                    "mqtt.listeners.tcp.default = " + f"{self.host}:{self.ports.mqtt}",
                    "mqtt.allow_anonymous = false",
                    "mqtt.vhost = /",
                    "mqtt.exchange = amq.topic",
                    # A persistent session's queue (a device's queued commands) replicated on
                    # every node, not a classic queue on the node the device last used: with
                    # it, the commands survive a kill -9 of that node (classic: 0 of 5 did).
                    "mqtt.durable_queue_type = quorum",
                    # Logins and the ACL come from the registry (access/engine_auth.py); by POST
                    # so that a password is never part of a URL.
                    "auth_backends.1 = http",
                    "auth_http.http_method = post",
                    f"auth_http.user_path = {auth}/user",
                    f"auth_http.vhost_path = {auth}/vhost",
                    f"auth_http.resource_path = {auth}/resource",
                    f"auth_http.topic_path = {auth}/topic",
                    "cluster_formation.peer_discovery_backend = classic_config",
                    f"cluster_formation.classic_config.nodes.1 = {self.seed}",
                    "log.file = false",
                    "log.console = true",
                    "log.console.level = info",
                    "",
                ]
            )
        )

    @property
    def config_path(self) -> Path:
        return self.directory / "rabbitmq.conf"

    def is_ready(self) -> bool:
        return "Server startup complete" in self.log_since_start() and port_open(
            self.host, self.ports.mqtt
        )


class RabbitCluster:
    """Three RabbitMQ nodes (`size`) in one cluster, with our own epmd and Erlang cookie."""

    def __init__(self, directory: Path, *, auth_url: str, size: int = 3) -> None:
        self.directory = directory
        taken: set[int] = set()
        self.epmd = Epmd(directory / "epmd", free_port(taken=taken))
        self._env = {
            "HOME": str(directory),  # where Erlang looks for the shared cookie
            "ERL_EPMD_PORT": str(self.epmd.port),
            "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),  # not /etc's
            "MOCLO_ENGINE_AUTH_URL": auth_url.rstrip("/"),
        }
        names = [f"r{index}@localhost" for index in range(1, size + 1)]
        self.nodes = [
            RabbitNode(
                directory / name.split("@")[0],
                node=name,
                ports=NodePorts(*(free_port(taken=taken) for _ in range(3))),
                seed=names[0],
                env=self._env,
            )
            for name in names
        ]
        self.start_s: float | None = None  # how long start() took, for the decision record

    @property
    def mqtt_urls(self) -> list[str]:
        return [node.mqtt_url for node in self.nodes]

    def start(self, *, timeout_s: float = 120.0) -> None:
        """Boots the cluster and returns once all nodes run in one cluster; ServerError if not."""
        began = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "rabbitmq-env.conf").write_text("")
        cookie = self.directory / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(os.urandom(20).hex())
            cookie.chmod(0o400)  # Erlang refuses a cookie others can read
        self.epmd.start()
        seed, *others = self.nodes
        seed.start(timeout_s=timeout_s)
        for node in others:
            node.spawn()
        for node in others:
            node.wait_ready(timeout_s=max(1.0, timeout_s - (time.monotonic() - began)))
        self.wait_running(len(self.nodes), timeout_s=30)
        self.start_s = time.monotonic() - began

    def ctl(self, *args: str, node: RabbitNode | None = None, timeout_s: float = 60) -> str:
        """`rabbitmqctl -n NODE ARGS` against this cluster; ServerError if it fails."""
        target = node or next((n for n in self.nodes if n.running()), self.nodes[0])
        command = [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", target.node, *args]
        env = {**os.environ, **self._env}
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
        )
        if result.returncode != 0:
            raise ServerError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def wait_running(self, count: int, *, timeout_s: float = 30) -> None:
        """Until `count` nodes run in the cluster (rabbitmqctl waits on the condition)."""
        self.ctl("await_online_nodes", str(count), "--timeout", str(int(timeout_s)))

    def close_user_connections(self, usernames: Sequence[str], reason: str) -> int:
        """Closes every connection (MQTT and AMQP) of these logins on every node, in one call
        of the CLI (each costs about 0.4 s); returns how many. For logins revoked in the
        registry (access/engine_revocation.py); ServerError if the CLI failed.

        Through `rabbitmqctl eval` and RabbitMQ's connection tracking, which is cluster-wide
        and knows MQTT connections: `rabbitmqctl close_all_user_connections` (3.10.8) closes
        only AMQP's (it asks `rabbit_networking`, where MQTT connections are not listed; tried:
        the device stayed connected), and the management plugin's `DELETE /api/connections`,
        which does the same as below, would cost a plugin and an administrator login. The two
        functions are RabbitMQ's internals, tried on 3.10.8 (tests/test_engine_revocation.py)."""

        def codes(text: str) -> str:  # an Erlang string literal nothing in a name can break
            return "[" + ",".join(str(ord(c)) for c in text) + "]"

        users = ",".join(codes(username) for username in usernames)
        answer = self.ctl(
            "eval",
            f"lists:sum([begin Cs = rabbit_connection_tracking:list_of_user(list_to_binary(U)), "
            f"ok = rabbit_connection_tracking:close_connections(Cs, {codes(reason)}, 0), "
            f"length(Cs) end || U <- [{users}]]).",
            timeout_s=30,
        )
        try:
            return int(answer.strip())
        except ValueError:
            raise ServerError(
                f"closing {list(usernames)}'s connections answered {answer!r}"
            ) from None

    def restart(self, index: int, *, timeout_s: float = 60) -> None:
        """Starts a stopped or killed node again; it rejoins the cluster from its own data."""
        self.nodes[index].start(timeout_s=timeout_s)

    def memory_mb(self) -> list[float]:
        """Each running node's resident memory (VmRSS), in MB."""
        sizes = []
        for node in self.nodes:
            if node.pid is None:
                continue
            status = Path(f"/proc/{node.pid}/status").read_text()
            kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
            sizes.append(int(kb) / 1024)
        return sizes

    def stop(self) -> None:
        """SIGTERM to every node at once (each stops in a few seconds), then epmd."""
        for node in self.nodes:
            if node.pid is not None:
                os.kill(node.pid, 15)
        for node in self.nodes:
            node.stop()
        self.epmd.stop()
