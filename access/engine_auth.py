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
  (a subscription's filter, or a queue's binding) if every topic it can match is matched by
  one `read` entry. One grant more than on Mosquitto: ingest's own login (the AMQP consumer,
  not its `~purpose` logins) reads the alert changes, `{prefix}/+/alerts/+`, which ingest
  itself publishes, to bind them to the control queue (ingest/control.py: the automations'
  triggers, the index of alert ids).

Every refusal is logged with its reason (never a password) and counted in `refusals`.
"""

from __future__ import annotations

import collections
import hmac
import io
import logging
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from paho.mqtt.client import topic_matches_sub

from access.broker import Entry, broker_logins
from access.passwords import verify_password
from access.registry import MqttLogin, Registry
from access.registry_watch import RegistryWatch
from core.mqtt import CONNECTION_SEPARATOR
from devices.topics import alert_subscription

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

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

    def logins(self) -> dict[str, EngineLogin]:
        """Every broker login by username, from the registry as it is now."""
        with self._lock:  # RegistryWatch.refresh is for one thread at a time
            if self._watch.due():
                self._watch.refresh()
            return self._watch.current

    def logins_read(self) -> dict[str, EngineLogin] | None:
        """`logins()` if they were read from the registry; None while it is missing or has no
        tables (every login is refused then, but nobody was revoked)."""
        with self._lock:
            if self._watch.due():
                self._watch.refresh()
            return self._watch.current if self._watch.read_from_registry else None

    def login(self, username: str) -> EngineLogin | None:
        return self.logins().get(username)

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
        elif permission == "read" and (
            any(access == "read" and filter_within(topic, granted)
                for access, granted in login.entries)
            or self._control_read(login, topic)
        ):  # fmt: skip
            return None
        return f"{permission} on topic {topic!r} is not granted to this login"

    def _control_read(self, login: EngineLogin, topic: str) -> bool:
        """Ingest's consumer binding the alert changes to the control queue."""
        consumer = login.role == "ingest" and CONNECTION_SEPARATOR not in login.username
        return consumer and filter_within(topic, alert_subscription(self.prefix))

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


# RabbitMQ's questions are a few form fields: an MQTT client id, username or topic holds at
# most 64 KiB, three times that percent-encoded. Anything longer, or a body that does not
# come, is not RabbitMQ: answered at once, or dropped after the timeout, so that no caller
# can hold a thread or make the service allocate what it claims to send (before: a claimed
# 10 TB body ended in a MemoryError without an answer, a missing one held its thread forever).
MAX_QUESTION_BYTES = 1024 * 1024
REQUEST_TIMEOUT_S = 10.0  # a whole request's; under RabbitMQ's own 15 s (auth_http.request_timeout)


class _DeadlineReader(io.RawIOBase):
    """A request's socket, read until one deadline for the whole request: a timeout per read
    would let a caller sending a byte every few seconds hold its thread for ever."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request was not read within its deadline")
        self._sock.settimeout(remaining)  # the answer's write is bounded by it too
        return self._sock.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    server: _AuthServer

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # read through the deadline instead
        deadline = time.monotonic() + self.server.request_timeout_s
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))

    def do_POST(self) -> None:
        question = self._question()
        if question is None:
            self.server.auth.refusals["request"] += 1
            log.warning("engine auth: refused a request outside the service's secret path")
            self._answer(404, b"deny")
            return
        declared = self.headers.get("Content-Length") or "0"
        # ASCII digits only, and few: int("²") and int() of 5,000 digits raise.
        if not (declared.isascii() and declared.isdigit()):
            length = -1
        else:
            length = int(declared) if len(declared) <= 9 else MAX_QUESTION_BYTES + 1
        if not 0 <= length <= MAX_QUESTION_BYTES:
            self.server.auth.refusals["request"] += 1
            log.warning("engine auth: refused a request declaring %.20r bytes", declared)
            self._answer(413 if length > 0 else 400, b"deny")
            return
        body = self.rfile.read(length).decode(errors="replace")
        form = {key: values[0] for key, values in parse_qs(body).items()}
        self._answer(200, self.server.auth.decide(question, form).encode())

    def _question(self) -> str | None:
        """The question's path below the secret one (`/user`, ...), or None for a stranger."""
        secret = f"/{self.server.secret}/".encode()
        asked = self.path.encode(errors="replace")
        if not hmac.compare_digest(asked[: len(secret)], secret):
            return None
        return "/" + self.path[len(secret) :]

    def _answer(self, status: int, answer: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        """Silent: the decisions are logged with their reasons, requests would repeat them."""

    def log_error(self, format: str, *args: object) -> None:
        """A request that timed out or could not be read (never a body: no password)."""
        log.warning("engine auth: %s", format % args)


class _AuthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        auth: EngineAuth,
        *,
        request_timeout_s: float,
        secret: str | None = None,
    ) -> None:
        super().__init__(address, _Handler)
        self.auth = auth
        self.request_timeout_s = request_timeout_s
        # The URL's path: only RabbitMQ is told it. Given when RabbitMQ's config is written
        # elsewhere (docker-compose: both read it from .env).
        self.secret = secret or secrets.token_urlsafe(24)


@contextmanager
def serve_engine_auth(
    auth: EngineAuth,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    secret: str | None = None,
) -> Iterator[str]:
    """Answers RabbitMQ's auth backend on a thread until the block ends; yields its URL.

    POST (RabbitMQ's `auth_http.http_method = post`): passwords never appear in a URL or a
    request log. A request whose body does not arrive within `request_timeout_s` is dropped;
    RabbitMQ then refuses what it asked about.

    The URL ends in a random path, a secret: RabbitMQ sends no credentials of its own and
    only the user question carries a password, so without it anyone reaching the port could
    ask which logins exist and what each may do. Keep the URL where the password would go
    (rabbitmq.conf, 0600), never in a log."""
    server = _AuthServer((host, port), auth, request_timeout_s=request_timeout_s, secret=secret)
    thread = threading.Thread(target=server.serve_forever, name="engine-auth", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/{server.secret}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
