"""The servers `moclo up` stands on: the broker and the database at the configured URLs when
they answer, else local `mosquitto` and `influxd` child processes (loopback only, under
`--data-dir`), on free ports when the configured ones are taken; and the stack's own
folders, ports and link secret. Used by `up.py` and `up_engine.py`."""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from contextlib import ExitStack, suppress
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr

from access.broker import PID_FILE
from core.settings import Settings
from moclo.local_access import LocalAccess, provision
from moclo.stack import InfluxServer, MosquittoServer, free_port, port_open
from simulators.run import SimulationOptions

LINK_SECRET_CHARS = 43  # secrets.token_urlsafe(32)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _port_or_free(host: str, port: int) -> int:
    return port if _can_bind(host, port) else free_port(host)


def _can_bind(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def dashboard_port(host: str, port: int, data_dir: Path) -> int:
    """The configured port if free; else the one this stack had last time (kept in
    `data_dir`), if free; else a free one, kept for next time. Links to the dashboard are
    already in people's inboxes and phones (one-tap acknowledgements, alert pages): a restart
    must not move it while the port it had is still free."""
    if _can_bind(host, port):
        return port
    kept = data_dir / "dashboard-port"
    with suppress(FileNotFoundError, ValueError):
        before = int(kept.read_text().strip())
        if 0 < before < 65536 and _can_bind(host, before):
            return before
    chosen = free_port(host)
    data_dir.mkdir(parents=True, exist_ok=True)
    kept.write_text(f"{chosen}\n")
    return chosen


def say(text: str) -> None:
    print(text, flush=True)


def start_local_servers(
    settings: Settings,
    data_dir: Path,
    servers: ExitStack,
    simulation: SimulationOptions | None = None,
) -> tuple[Settings, list[str], LocalAccess | None]:
    """Starts what does not answer at the configured URLs; returns the settings to use, and
    the logins of a broker started here (None for one that was already running)."""
    notes: list[str] = []
    updates: dict[str, str] = {}
    access = _start_broker(settings, data_dir, servers, simulation, notes, updates)
    start_database(settings, data_dir, servers, notes, updates)
    local_ports(settings, data_dir, updates)
    return settings.model_copy(update=updates), notes, access


def _start_broker(
    settings: Settings,
    data_dir: Path,
    servers: ExitStack,
    simulation: SimulationOptions | None,
    notes: list[str],
    updates: dict[str, str],
) -> LocalAccess | None:
    """A local broker, unless one answers at MOCLO_MQTT_URL; its lines go to `notes` and its
    URL to `updates`. Returns its logins (None for a broker that was running already)."""
    access = None
    mqtt = settings.mqtt
    if port_open(mqtt.host, mqtt.port):
        notes.append(f"  MQTT broker  {mqtt.display()}  (already running, used as is)")
    elif not _is_loopback(mqtt.host):
        raise SystemExit(
            f"moclo up: no MQTT broker answers at {mqtt.display()}, and moclo only "
            "starts one on this machine: fix MOCLO_MQTT_URL or start the broker"
        )
    else:
        # Closed like a production broker: accounts and ACLs from the registry, and TLS.
        access = provision(settings, data_dir, simulation)
        broker = MosquittoServer(
            data_dir / "mosquitto",
            _port_or_free("127.0.0.1", mqtt.port),
            password_file=access.auth.password_file,
            acl_file=access.auth.acl_file,
            tls=access.tls,
            tls_port=_port_or_free("127.0.0.1", 8883),
        )
        broker.start()
        servers.callback(broker.stop)
        # So that `moclo devices add` and the like reload this broker (access/broker.py).
        pid_file = access.auth.password_file.parent / PID_FILE
        pid_file.write_text(f"{broker.pid}\n")
        servers.callback(pid_file.unlink, missing_ok=True)
        updates["mqtt_url"] = broker.url
        notes.append(
            f"  MQTT broker  {broker.url}  (started here; no anonymous clients, accounts and "
            f"ACLs from {access.registry}; config and log in {broker.directory})"
        )
        notes.append(f"  MQTT (TLS)   {broker.tls_url}  (CA certificate {access.tls.ca_cert})")
    return access


def start_database(
    settings: Settings,
    data_dir: Path,
    servers: ExitStack,
    notes: list[str],
    updates: dict[str, str],
) -> None:
    """A local InfluxDB, unless one answers at MOCLO_INFLUX_URL; like `_start_broker`."""
    influx = urlsplit(settings.influx_url)
    host, port = influx.hostname or "127.0.0.1", influx.port or 8086
    if port_open(host, port):
        notes.append(
            f"  InfluxDB     {settings.influx_display}  db={settings.influx_db}  "
            "(already running, used as is)"
        )
    elif not _is_loopback(host):
        raise SystemExit(
            f"moclo up: no InfluxDB answers at {settings.influx_display}, and moclo "
            "only starts one on this machine: fix MOCLO_INFLUX_URL or start it"
        )
    else:
        database = InfluxServer(data_dir / "influxdb", _port_or_free("127.0.0.1", port))
        database.start()
        servers.callback(database.stop)
        updates["influx_url"] = database.url
        notes.append(
            f"  InfluxDB     {database.url}  db={settings.influx_db}  (started here; "
            f"data in {database.directory})"
        )


def local_ports(settings: Settings, data_dir: Path, updates: dict[str, str]) -> None:
    """The spool under `data_dir`, and free ports for what listens on loopback."""
    if settings.spool_dir == Settings.model_fields["spool_dir"].default:
        updates["spool_dir"] = str(data_dir / "spool")  # everything of this stack in one place
    if settings.http_listen != "off":
        http_host, _, http_port = settings.http_listen.rpartition(":")
        if _is_loopback(http_host) and int(http_port):
            updates["http_listen"] = f"{http_host}:{_port_or_free(http_host, int(http_port))}"
    serve_host, _, serve_port = settings.serve_listen.rpartition(":")
    if _is_loopback(serve_host) and int(serve_port):
        kept = dashboard_port(serve_host, int(serve_port), data_dir)
        updates["serve_listen"] = f"{serve_host}:{kept}"
    if settings.notify_outbox == Settings.model_fields["notify_outbox"].default:
        updates["notify_outbox"] = str(data_dir / "notify" / "outbox.sqlite")
    if settings.notify_listen != "off":
        host, _, port = settings.notify_listen.rpartition(":")
        if _is_loopback(host) and int(port):
            updates["notify_listen"] = f"{host}:{_port_or_free(host, int(port))}"


def link_secret(data_dir: Path) -> SecretStr:
    """The secret of this stack's one-tap acknowledgement links, made once and kept in
    `data_dir` (0600): a link already in someone's inbox, or in a message the outbox still
    holds, is good for a day, so it must still be accepted after `moclo up` restarts."""
    path = data_dir / "notify" / "link-secret"
    with suppress(FileNotFoundError):
        kept = path.read_text(encoding="ascii").strip()
        if len(kept) >= LINK_SECRET_CHARS:  # else a write cut short by a crash: make anew
            return SecretStr(kept)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(secrets.token_urlsafe(32))
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
    return SecretStr(path.read_text(encoding="ascii").strip())
