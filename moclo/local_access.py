"""`moclo up`'s broker, closed like a production one: no anonymous clients, an account per
service, a login per simulated device, a TLS listener with a local CA, and a token for the
dashboard.

Every start issues fresh secrets for what `moclo up` runs itself (its ingest, serve and notifier
accounts, its simulated devices, its dashboard token) and revokes the previous ones, so no
secret of the stack has to be kept anywhere but in this process's memory; the one exception is
the dashboard token, written to `{data dir}/dashboard-token` (0600) for the person at the
terminal. What people add with `moclo devices add`, `moclo accounts add` and `moclo tokens
create` is left as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import SecretStr

from access.broker import BrokerAuth, write_broker_auth
from access.registry import DeviceSpec, Registry, Role
from access.tls import LocalTls, ensure_local_tls
from access.tokens import Tokens
from core.settings import Settings
from simulators.run import SimulationOptions, build_fleet

INGEST_ACCOUNT = "moclo-up-ingest"
SERVE_ACCOUNT = "moclo-up-serve"
NOTIFY_ACCOUNT = "moclo-up-notify"
DASHBOARD_TOKEN = "moclo-up"


@dataclass(frozen=True)
class LocalAccess:
    """What the local stack's parts log in with."""

    auth: BrokerAuth
    tls: LocalTls
    registry: Path
    simulation: SimulationOptions | None
    token_file: Path
    ingest_login: tuple[str, str] = field(repr=False)
    serve_login: tuple[str, str] = field(repr=False)
    notify_login: tuple[str, str] = field(repr=False)

    def for_ingest(self, settings: Settings) -> Settings:
        return _logged_in(settings, self.ingest_login, self.registry)

    def for_serve(self, settings: Settings) -> Settings:
        return _logged_in(settings, self.serve_login, self.registry)

    def for_notify(self, settings: Settings) -> Settings:
        return _logged_in(settings, self.notify_login, self.registry)


def registry_path(settings: Settings, data_dir: Path) -> Path:
    """The registry: MOCLO_REGISTRY if set, else in the data dir, with the rest of the stack."""
    if settings.registry == Settings.model_fields["registry"].default:
        return data_dir / "registry.sqlite"
    return Path(settings.registry)


def provision(
    settings: Settings, data_dir: Path, simulation: SimulationOptions | None
) -> LocalAccess:
    """Issues the stack's own credentials and writes the broker's password and ACL files."""
    registry = Registry(registry_path(settings, data_dir))
    ingest = _fresh_account(registry, "ingest", INGEST_ACCOUNT)
    serve = _fresh_account(registry, "serve", SERVE_ACCOUNT)
    notify = _fresh_account(registry, "notify", NOTIFY_ACCOUNT)  # used if a notify file is set
    if simulation is not None:
        simulation = _with_device_logins(registry, settings, simulation)
    auth_dir = (
        Path(settings.broker_auth_dir)
        if settings.broker_auth_dir not in (None, "off")
        else registry.path.parent / "broker"
    )
    auth = write_broker_auth(registry, auth_dir, prefix=settings.topic_prefix)
    tls = ensure_local_tls(data_dir / "tls")

    tokens = Tokens(registry.path)
    if any(t.name == DASHBOARD_TOKEN for t in tokens.list()):
        tokens.revoke(DASHBOARD_TOKEN)
    _, token = tokens.create(DASHBOARD_TOKEN, None, "admin")
    token_file = data_dir / "dashboard-token"
    _write_secret(token_file, token + "\n")

    return LocalAccess(
        auth=auth,
        tls=tls,
        registry=registry.path,
        simulation=simulation,
        token_file=token_file,
        ingest_login=ingest,
        serve_login=serve,
        notify_login=notify,
    )


def _fresh_account(registry: Registry, role: Role, name: str) -> tuple[str, str]:
    if any(a.name == name for a in registry.accounts()):
        registry.revoke_account(name)
    credentials = registry.add_account(role, name)
    return credentials.username, credentials.password


def _with_device_logins(
    registry: Registry, settings: Settings, simulation: SimulationOptions
) -> SimulationOptions:
    """The simulation with one connection per device, each logged in as that device."""
    fleet = build_fleet(simulation, settings.topic_prefix, 0.0)
    specs = [DeviceSpec(d.tenant, d.device_type, d.device_id) for d in fleet.devices]
    registered = {(d.tenant, d.device_id) for d in registry.devices()}
    for spec in specs:
        if (spec.tenant, spec.device_id) in registered:
            registry.revoke_device(spec.tenant, spec.device_id)
    issued = registry.add_devices(specs)
    logins = {
        f"{record.tenant}.{record.device_id}": (credentials.username, credentials.password)
        for record, credentials in issued
    }
    return replace(simulation, per_device_connections=True, credentials=logins)


def _logged_in(settings: Settings, login: tuple[str, str], registry: Path) -> Settings:
    username, password = login
    return settings.model_copy(
        update={
            "mqtt_username": username,
            "mqtt_password": SecretStr(password),
            "registry": str(registry),
        }
    )


def _write_secret(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
