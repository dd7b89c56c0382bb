"""RabbitMQ's logins and ACL from the registry: the distributed engine's equivalent of
Mosquitto's password and ACL files (access/broker.py), served to RabbitMQ's HTTP auth backend
(`rabbitmq_auth_backend_http`, shipped with RabbitMQ 3.10).

Why a service and not files: RabbitMQ's own user database stores passwords in its own hash
format, and the registry keeps only Mosquitto's (`$7$` PBKDF2), never the password; and only
the HTTP backend sees a connection's MQTT client id (in the vhost check, before RabbitMQ 3.10
registers the id cluster-wide and disconnects the id's current holder). So this service
refuses a login whose client id is not its username: no login can take another's client id
on any node, as `use_username_as_clientid` does for Mosquitto.

What each login may do is exactly what access/broker.py grants it (`broker_logins`, the same
entries), read in RabbitMQ's terms:

- `user`: the username is an active login of the registry and the password matches its hash;
- `vhost`: only `/`; an MQTT connection's client id must equal its username; a connection
  without one (AMQP 0-9-1) only for ingest's logins (the engine's consumers), never a device;
- `resource`: the MQTT exchange `amq.topic` (read and write; the topic check below decides),
  the login's own MQTT session queues `mqtt-subscription-{username}qos0|1`, and for ingest the
  partition queues and their exchange (`ENGINE_QUEUE_PREFIX`); nothing else;
- `topic`: RabbitMQ hands over the MQTT topic as a routing key (`/` becomes `.`, `+` becomes
  `*`); a write is allowed if the topic matches one of the login's `write` entries, a read
  (a subscription's filter) if every topic it can match is matched by one `read` entry.

Every refusal is logged with its reason (never a password) and counted in `refusals`.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from paho.mqtt.client import topic_matches_sub

from access.broker import Entry, broker_logins
from access.passwords import verify_password
from access.registry import MqttLogin, Registry
from access.registry_watch import RegistryWatch

log = logging.getLogger(__name__)

MQTT_EXCHANGE = "amq.topic"  # RabbitMQ's default `mqtt.exchange`, set explicitly by moclo
ENGINE_QUEUE_PREFIX = "moclo.partition."  # the consumers' queues (and their exchange's name)
_SESSION_QUEUES = ("qos0", "qos1")  # RabbitMQ 3.10 names them mqtt-subscription-{client id}qos*


@dataclass(frozen=True, slots=True)
class EngineLogin:
    """One broker login (a registry login or its `~purpose` connection) and its grants."""

    username: str
    password_hash: str
    role: str
    entries: tuple[Entry, ...]


def engine_logins(logins: list[MqttLogin], prefix: str) -> dict[str, EngineLogin]:
    """Every broker login by username, with the same grants as Mosquitto's ACL file."""
    return {
        username: EngineLogin(username, login.password_hash, login.role, tuple(entries))
        for login in logins
        for username, entries in broker_logins(login, prefix)
    }


def mqtt_topic(routing_key: str) -> str:
    """The MQTT topic or filter RabbitMQ's MQTT plugin turned into `routing_key`."""
    return "/".join("+" if level == "*" else level for level in routing_key.split("."))


def filter_within(requested: str, granted: str) -> bool:
    """Whether every topic `requested` can match is matched by `granted` (MQTT filters)."""
    want, have = requested.split("/"), granted.split("/")
    for index, level in enumerate(have):
        if level == "#":
            return True
        if index >= len(want):
            return False
        if want[index] == "#" or (level != "+" and want[index] != level):
            return False
    return len(want) == len(have)


class EngineAuth:
    """The decisions, from the registry as it is now (re-read when it changes)."""

    def __init__(self, registry: Path | str, *, prefix: str, check_every_s: float = 1.0) -> None:
        registry_file = Registry(registry)  # creates the file and its tables if missing
        self.prefix = prefix
        self.refusals: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._watch: RegistryWatch[dict[str, EngineLogin]] = RegistryWatch(
            registry_file.path,
            lambda _db: engine_logins(registry_file.mqtt_logins(), prefix),
            {},
            log=log,
            when_missing="the engine refuses every login",
            check_every_s=check_every_s,
        )

    def login(self, username: str) -> EngineLogin | None:
        with self._lock:  # RegistryWatch.refresh is for one thread at a time
            if self._watch.due():
                self._watch.refresh()
            return self._watch.current.get(username)

    def user(self, username: str, password: str) -> str | None:
        """None if allowed, else the reason for the refusal."""
        login = self.login(username)
        if login is None:
            return "no such login in the registry (revoked, or never added)"
        if not verify_password(password, login.password_hash):
            return "wrong password"
        return None

    def vhost(self, username: str, vhost: str, client_id: str | None) -> str | None:
        login = self.login(username)
        if login is None:
            return "no such login in the registry"
        if vhost != "/":
            return f"vhost {vhost!r}: moclo uses only '/'"
        if client_id is None:
            return None if login.role == "ingest" else "only ingest's logins may use AMQP"
        if client_id != username:
            return f"client id {client_id!r} is not the login's own (use the username)"
        return None

    def resource(self, username: str, kind: str, name: str, permission: str) -> str | None:
        login = self.login(username)
        if login is None:
            return "no such login in the registry"
        if kind == "exchange" and name == MQTT_EXCHANGE and permission in ("read", "write"):
            return None
        session_queues = {f"mqtt-subscription-{username}{qos}" for qos in _SESSION_QUEUES}
        if kind == "queue" and name in session_queues:
            return None
        if login.role == "ingest" and name.startswith(ENGINE_QUEUE_PREFIX):
            return None
        return f"{permission} on {kind} {name!r} is not granted to this login"

    def topic(self, username: str, routing_key: str, permission: str) -> str | None:
        login = self.login(username)
        if login is None:
            return "no such login in the registry"
        topic = mqtt_topic(routing_key)
        if permission == "write":
            wildcard = "+" in topic.split("/") or "#" in topic.split("/")
            if not wildcard and any(
                access == "write" and topic_matches_sub(granted, topic)
                for access, granted in login.entries
            ):
                return None
        elif permission == "read" and any(
            access == "read" and filter_within(topic, granted) for access, granted in login.entries
        ):
            return None
        return f"{permission} on topic {topic!r} is not granted to this login"

    def decide(self, path: str, form: dict[str, str]) -> str:
        """RabbitMQ's question at `path` (user, vhost, resource, topic) → its answer."""
        username = form.get("username", "")
        if path == "/user":
            reason = self.user(username, form.get("password", ""))
        elif path == "/vhost":
            reason = self.vhost(username, form.get("vhost", ""), form.get("client_id"))
        elif path == "/resource":
            args = form.get("resource", ""), form.get("name", ""), form.get("permission", "")
            reason = self.resource(username, *args)
        elif path == "/topic":
            reason = self.topic(username, form.get("routing_key", ""), form.get("permission", ""))
        else:
            reason = f"unknown question {path!r}"
        if reason is None:
            return "allow"
        self.refusals[path.strip("/")] += 1
        log.info("engine refused %s for %r: %s", path.strip("/"), username, reason)
        return "deny"


class _Handler(BaseHTTPRequestHandler):
    server: _AuthServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode(errors="replace")
        form = {key: values[0] for key, values in parse_qs(body).items()}
        answer = self.server.auth.decide(self.path, form).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        """Silent: the decisions are logged with their reasons, requests would repeat them."""


class _AuthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], auth: EngineAuth) -> None:
        super().__init__(address, _Handler)
        self.auth = auth


@contextmanager
def serve_engine_auth(auth: EngineAuth, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Answers RabbitMQ's auth backend on a thread until the block ends; yields its URL.

    POST (RabbitMQ's `auth_http.http_method = post`): passwords never appear in a URL or a
    request log."""
    server = _AuthServer((host, port), auth)
    thread = threading.Thread(target=server.serve_forever, name="engine-auth", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
