"""Local servers as child processes: Mosquitto and InfluxDB with project-local config and data.

`moclo up` uses this when nothing answers at the configured URLs, and the test suite uses the
same code for its session fixtures, so what the tests run is what users run. Servers listen on
loopback only. Broker settings, and why:

- `max_inflight_messages 1000`: MQTT 3.1.1 consumers that acknowledge after a batch write would
  otherwise stall at the default of 20 unacknowledged messages (ingest itself speaks MQTT 5 and
  sets its own Receive Maximum, which takes precedence).
- `max_queued_messages 1000000` and `max_queued_bytes` (512 MB): what the broker holds for
  ingest's persistent session while it is away. At 1,000 readings/s that is about 16 minutes of
  outage before the broker drops messages (it counts them in $SYS/broker/publish/messages/
  dropped). With `max_packet_size` (264 KiB: ingest's own 256 KiB payload limit and room for
  the topic), all in access/broker.py BROKER_SETTINGS, shared with every configuration moclo
  ships.
- `persistence true`, `autosave_interval 5`: queued messages survive a broker restart; a kill -9
  of the broker loses what it acknowledged since its last save, at most about 6 s.
- with a password file, `use_username_as_clientid true` on every listener: a client's id is its
  login, so no login can take another's session (access/broker.py, LISTENER_SETTINGS).
"""

from __future__ import annotations

import ctypes
import getpass
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from access.broker import AUTOSAVE_INTERVAL_S, BROKER_SETTINGS, LISTENER_SETTINGS
from access.tls import LocalTls


class ServerError(RuntimeError):
    """A local server could not be started; the message says why and where its log is."""


# Below Linux's ephemeral range (32768-60999): a port picked there and bound a moment later
# by a child can meanwhile be handed to any other socket binding port 0 or connecting out;
# down here only another pick like this one can take it.
LOW_PORTS = range(10_000, 32_000)
# Never the same port twice from one process (one pick is not bound until its server starts).
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1", *, taken: set[int] | None = None) -> int:
    """A free port below the ephemeral range, picked at random (so parallel sessions and
    test workers rarely try the same one) and checked by binding it; never one in `taken` or
    one this process handed out before."""
    for _ in range(200):
        port = random.choice(LOW_PORTS)
        if port in _handed_out or (taken is not None and port in taken):
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        if taken is not None:
            taken.add(port)
        return port
    raise ServerError(f"no free port found in {LOW_PORTS.start}-{LOW_PORTS.stop - 1} on {host}")


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def find_executable(name: str, *, package: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ServerError(
        f"{name} is not installed: install the Debian package '{package}' "
        f"(apt-get install {package}), or point moclo at a running server"
    )


def _terminate_with_parent() -> Callable[[], None] | None:
    """On Linux, asks the kernel to SIGTERM the server if moclo dies (even by SIGKILL), so no
    orphaned broker or database keeps the ports and the data directory.

    The kernel ties this to the thread that started the child, so it is used only from the
    main thread: a server started from a worker thread would be stopped when the thread ends.
    """
    if (
        not sys.platform.startswith("linux")
        or threading.current_thread() is not threading.main_thread()
    ):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None
    pr_set_pdeathsig = 1

    def arrange() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

    return arrange


class LocalServer:
    """One child process with its own directory, log file and readiness check."""

    name = "server"

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.host = "127.0.0.1"
        self.log_path = directory / f"{self.name}.log"
        self._log_offset = 0
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def write_config(self) -> None:
        raise NotImplementedError

    def is_ready(self) -> bool:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The child's environment; None: this process's own."""
        return None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, *, timeout_s: float = 30.0) -> None:
        """Starts the process and returns once it answers; ServerError if it does not."""
        self.spawn()
        self.wait_ready(timeout_s=timeout_s)

    def spawn(self) -> None:
        """Starts the process without waiting (several servers can then boot at once)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.write_config()
        log_file = self.log_path.open("ab")
        self._log_offset = log_file.tell()
        # Its own session: Ctrl-C in the terminal reaches moclo, which stops the servers last,
        # after ingest has written and acknowledged what it holds.
        self._process = subprocess.Popen(
            self.command(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=self.environment(),
            preexec_fn=_terminate_with_parent(),
        )
        log_file.close()

    def wait_ready(self, *, timeout_s: float = 30.0) -> None:
        """Returns once the spawned process answers; ServerError if it exits or stays silent."""
        assert self._process is not None, "spawn() first"
        deadline = time.monotonic() + timeout_s
        # Ready means answering while still alive: a process that failed to bind may still be
        # exiting while another server answers on the same port.
        while not (self.is_ready() and self._process.poll() is None):
            if self._process.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with {self._process.returncode} while starting; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(
                    f"{self.name} did not answer on port {self.port} within {timeout_s:.0f}s; "
                    f"see {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.05)  # polling a readiness probe; the deadline above bounds it

    def stop(self, *, timeout_s: float = 20.0) -> None:
        """SIGTERM (both servers save their state on it), then SIGKILL if it hangs."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL, for tests of what survives a crash."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_since_start(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class MosquittoServer(LocalServer):
    name = "mosquitto"

    def __init__(
        self,
        directory: Path,
        port: int,
        *,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        tls: LocalTls | None = None,
        tls_port: int | None = None,
        client_certificates: bool = False,
        autosave_interval_s: int = AUTOSAVE_INTERVAL_S,
        sys_interval_s: int | None = None,
    ) -> None:
        super().__init__(directory, port)
        # Shorter only in tests that wait for a save; every shipped config keeps the default.
        self.autosave_interval_s = autosave_interval_s
        # How often $SYS counters are published (Mosquitto's default, 10 s, when None); a
        # benchmark that waits for one shortens it.
        self.sys_interval_s = sys_interval_s
        # With a password file, anonymous clients are refused; the ACL file says who may
        # publish and subscribe where (both generated from the registry by access/broker.py).
        self.password_file = password_file
        self.acl_file = acl_file
        # A TLS listener beside the plain one, with a certificate from the local CA; with
        # client certificates, a client's certificate common name is its username.
        self.tls = tls
        self.tls_port = tls_port
        self.client_certificates = client_certificates

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "mosquitto.conf"

    def command(self) -> list[str]:
        return [find_executable("mosquitto", package="mosquitto"), "-c", str(self.config_path)]

    def write_config(self) -> None:
        data = self.directory / "data"
        data.mkdir(exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            *self._listener_settings(),
            *(
                ("allow_anonymous false", f"password_file {self.password_file}")
                if self.password_file
                else ("allow_anonymous true",)
            ),
            *((f"acl_file {self.acl_file}",) if self.acl_file else ()),
            "persistence true",
            f"persistence_location {data}/",
            "max_inflight_messages 1000",
            *(
                f"autosave_interval {self.autosave_interval_s}"
                if line.startswith("autosave_interval ")
                else line
                for line in BROKER_SETTINGS
            ),
            *(() if self.sys_interval_s is None else (f"sys_interval {self.sys_interval_s}",)),
            "set_tcp_nodelay true",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_type subscribe",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        # Started as root, Mosquitto drops to the user 'mosquitto', which cannot write here.
        if os.geteuid() == 0:
            lines.append("user root")
        else:
            lines.append(f"user {getpass.getuser()}")
        lines.extend(self._tls_listener())  # last: the lines after a listener are its own
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def tls_url(self) -> str | None:
        return None if self.tls_port is None else f"mqtts://{self.host}:{self.tls_port}"

    def _listener_settings(self) -> tuple[str, ...]:
        """Each listener's own: with logins, a client's id is its username (an open broker
        has no username to use, and would refuse anonymous clients with it)."""
        return LISTENER_SETTINGS if self.password_file else ()

    def _tls_listener(self) -> tuple[str, ...]:
        if self.tls is None or self.tls_port is None:
            return ()
        return (
            # Settings after a listener line belong to it; the plain listener's come first.
            f"listener {self.tls_port} {self.host}",
            *self._listener_settings(),
            f"cafile {self.tls.ca_cert}",
            f"certfile {self.tls.server_cert}",
            f"keyfile {self.tls.server_key}",
            f"require_certificate {'true' if self.client_certificates else 'false'}",
            f"use_identity_as_username {'true' if self.client_certificates else 'false'}",
        )

    def is_ready(self) -> bool:
        # Mosquitto logs "running" once its listeners are bound; the port alone could be
        # another process's.
        return " running" in self.log_since_start() and port_open(self.host, self.port)


class InfluxServer(LocalServer):
    name = "influxd"

    def __init__(self, directory: Path, port: int, *, max_body_size: int = 25_000_000) -> None:
        super().__init__(directory, port)
        self.rpc_port = free_port()
        self.max_body_size = max_body_size

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "influxdb.conf"

    def command(self) -> list[str]:
        return [
            find_executable("influxd", package="influxdb"),
            "run",
            "-config",
            str(self.config_path),
        ]

    def write_config(self) -> None:
        d = self.directory
        self.config_path.write_text(f"""\
reporting-disabled = true
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{d / "meta"}"

[data]
  dir = "{d / "data"}"
  wal-dir = "{d / "wal"}"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  auth-enabled = false
  log-enabled = false
  max-body-size = {self.max_body_size}

[continuous_queries]
  enabled = false

[logging]
  level = "warn"
""")

    def is_ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ping", timeout=1.0).status_code == 204
        except httpx.HTTPError:
            return False
