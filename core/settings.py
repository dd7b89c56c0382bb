"""Configuration, declared once: environment variables, overridden by command-line flags.

| variable                 | default                  | meaning                                  |
|--------------------------|--------------------------|------------------------------------------|
| MOCLO_MQTT_URL           | mqtt://127.0.0.1:1883    | broker; user:password@ in the URL        |
| MOCLO_MQTT_USERNAME      | (none)                   | broker account (overrides the URL's)     |
| MOCLO_MQTT_PASSWORD      | (none)                   | its password; environment only           |
| MOCLO_MQTT_PASSWORD_FILE | (none)                   | or a file holding it (also _TOKEN, _URL) |
| MOCLO_MQTT_CA_FILE       | (none)                   | CA certificate for mqtts:// (a local CA) |
| MOCLO_INFLUX_URL         | http://127.0.0.1:8086    | InfluxDB 1.x, or 2.x/3.x compatibility   |
| MOCLO_INFLUX_DB          | moclo                    | database (bucket on 2.x/3.x)             |
| MOCLO_INFLUX_TOKEN       | (none)                   | sent as `Authorization: Token …`         |
| MOCLO_MAX_READING_AGE    | 90d                      | oldest reading (or the db's retention)   |
| MOCLO_TOPIC_PREFIX       | moclo                    | first topic level(s) of every topic      |
| MOCLO_INGEST_CLIENT_ID   | its MQTT username        | MQTT client id of ingest (its session)   |
| MOCLO_INGEST_TENANTS     | (all)                    | ingest only these tenants (comma list)   |
| MOCLO_INGEST_SHARE_GROUP | (none)                   | share the load: $share/GROUP, no alerts  |
| MOCLO_SPOOL_DIR          | .moclo/spool             | on-disk buffer while InfluxDB is down    |
| MOCLO_HTTP_LISTEN        | 127.0.0.1:9108           | /healthz and /metrics; `off` disables    |
| MOCLO_SERVE_LISTEN       | 127.0.0.1:8080           | `moclo serve`: dashboard and HTTP API    |
| MOCLO_RULES_FILE         | (none)                   | alert rules file (TOML) over the defaults |
| MOCLO_REGISTRY           | .moclo/registry.sqlite   | devices, accounts and API tokens (SQLite) |
| MOCLO_UNREGISTERED       | reject                   | unregistered devices: reject, flag, off  |
| MOCLO_BROKER_AUTH_DIR    | (beside the registry)    | generated broker password and ACL files  |
| MOCLO_WEBHOOK_URL        | (none)                   | POST each alert change here (JSON)       |
| MOCLO_WEBHOOK_MIN_SEVERITY | info                   | only changes of at least this severity   |
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from core.durations import parse_duration
from core.mqtt import MqttEndpoint
from devices.topics import DEFAULT_PREFIX, IDENTIFIER, check_prefix

ENVIRONMENT = {
    "mqtt_url": "MOCLO_MQTT_URL",
    "mqtt_username": "MOCLO_MQTT_USERNAME",
    "mqtt_password": "MOCLO_MQTT_PASSWORD",
    "mqtt_ca_file": "MOCLO_MQTT_CA_FILE",
    "influx_url": "MOCLO_INFLUX_URL",
    "influx_db": "MOCLO_INFLUX_DB",
    "influx_token": "MOCLO_INFLUX_TOKEN",
    "max_reading_age": "MOCLO_MAX_READING_AGE",
    "topic_prefix": "MOCLO_TOPIC_PREFIX",
    "ingest_client_id": "MOCLO_INGEST_CLIENT_ID",
    "ingest_tenants": "MOCLO_INGEST_TENANTS",
    "ingest_share_group": "MOCLO_INGEST_SHARE_GROUP",
    "spool_dir": "MOCLO_SPOOL_DIR",
    "http_listen": "MOCLO_HTTP_LISTEN",
    "serve_listen": "MOCLO_SERVE_LISTEN",
    "rules_file": "MOCLO_RULES_FILE",
    "registry": "MOCLO_REGISTRY",
    "unregistered": "MOCLO_UNREGISTERED",
    "broker_auth_dir": "MOCLO_BROKER_AUTH_DIR",
    "webhook_url": "MOCLO_WEBHOOK_URL",
    "webhook_min_severity": "MOCLO_WEBHOOK_MIN_SEVERITY",
}


_CLIENT_ID = r"^[A-Za-z0-9._-]+$"
DEFAULT_INGEST_CLIENT_ID = "moclo-ingest"
# The password runs to the authority's last @ (`user:p@ss@host` logs in with `p@ss`, as
# urlsplit and httpx read it), so all of it is masked, not just what precedes its own @.
_PASSWORD_IN_URL = re.compile(r"(://[^:@/]*:)[^/?#]*@")


def display_url(url: str) -> str:
    """`url` with the password of its `user:password@` masked (`user:***@`), for every log
    line, message and printed command that shows it."""
    return _PASSWORD_IN_URL.sub(r"\1***@", url)


def url_has_password(url: str | None) -> bool:
    return bool(url and _PASSWORD_IN_URL.search(url))


class SettingsError(ValueError):
    """A setting is wrong; the message names the variable or flag and what is allowed."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_username: str | None = None
    # A secret: from the environment only, never a flag (it would show in `ps`).
    mqtt_password: SecretStr | None = None
    mqtt_ca_file: str | None = None
    influx_url: str = "http://127.0.0.1:8086"
    influx_db: str = Field(default="moclo", min_length=1)
    influx_token: SecretStr | None = None
    # Seconds: how old a reading ingest still accepts (devices that were offline upload their
    # backlog). The database's retention, read by ingest, narrows it further when shorter.
    max_reading_age: float = 90 * 86_400.0
    topic_prefix: str = DEFAULT_PREFIX
    # Unset: ingest's MQTT username (the name moclo's brokers give its session whatever id it
    # sends, see `ingest_id`), or `moclo-ingest` without one. For brokers that do not override.
    ingest_client_id: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=_CLIENT_ID
    )
    # Scaling out on one box (README "Scale-out"). Tenants: this ingest subscribes to these
    # tenants' topics only, so several ingests can split a fleet by tenant, each device always
    # reaching the same one (alert state stays whole). Share group: an MQTT 5 shared
    # subscription, $share/GROUP/...: the broker deals messages to the group's members in
    # turn, so one device's readings reach different processes, and such an ingest stores
    # and validates but judges no alert rules.
    ingest_tenants: str | None = None
    ingest_share_group: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$"
    )
    spool_dir: str = Field(default=".moclo/spool", min_length=1)
    http_listen: str = Field(default="127.0.0.1:9108", pattern=r"^(off|[^\s:]*:\d{1,5})$")
    serve_listen: str = Field(default="127.0.0.1:8080", pattern=r"^[^\s:]*:\d{1,5}$")
    rules_file: str | None = None
    # Who may do what: registered devices, service and app accounts, API tokens (access/).
    registry: str = Field(default=".moclo/registry.sqlite", min_length=1)
    # Readings of devices that are not registered (or revoked): `reject` them (reason
    # unregistered_device), `flag` them (stored, counted, and each such device noted in
    # moclo_unregistered; for open demos), or `off`: no registry check at all.
    unregistered: Literal["reject", "flag", "off"] = "reject"
    # Where registry changes regenerate Mosquitto's password and ACL files: by default a
    # `broker` folder beside the registry file; `off` to never write them.
    broker_auth_dir: str | None = Field(default=None, min_length=1)
    # A webhook URL often carries a token: a secret, from the environment only.
    webhook_url: SecretStr | None = None
    webhook_min_severity: Literal["info", "warning", "critical"] = "info"

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        MqttEndpoint.from_url(value)
        return value

    @field_validator("influx_url")
    @classmethod
    def _influx_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must look like http://host:port (or https://)")
        return value

    @field_validator("max_reading_age", mode="before")
    @classmethod
    def _max_reading_age(cls, value: object) -> object:
        # A duration like the command line's (90d, 36h); a number is seconds.
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("max_reading_age")
    @classmethod
    def _max_reading_age_positive(cls, value: float) -> float:
        if not value > 0:
            raise ValueError("must be a duration of more than zero, e.g. 90d or 36h")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            url = value.get_secret_value()
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must look like https://host/path (or http://)")
            try:
                # Built now as the notifier will build it, so that a URL httpx refuses (a
                # control character, a host that is not valid IDNA) stops the start, not the
                # first alert. The error is not shown: it may quote the URL, and its token.
                httpx.Request("POST", url)
            except (httpx.InvalidURL, ValueError):
                raise ValueError(
                    "is not a URL that can be sent to (its host is not a valid domain name or "
                    "address, or it holds a control character); it is not shown "
                    "here, as it may hold a token"
                ) from None
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_prefix(value)

    @field_validator("ingest_tenants")
    @classmethod
    def _tenants(cls, value: str | None) -> str | None:
        if value is None:
            return None
        tenants = [t.strip() for t in value.split(",") if t.strip()]
        for tenant in tenants:
            if not IDENTIFIER.fullmatch(tenant):
                raise ValueError(f"{tenant!r} is not a tenant id (^[a-z0-9][a-z0-9-]{{0,62}}$)")
        if not tenants:
            raise ValueError("name at least one tenant, comma-separated")
        return ",".join(tenants)

    @property
    def tenants(self) -> tuple[str, ...] | None:
        """The tenants this ingest subscribes to, or None for all."""
        return tuple(self.ingest_tenants.split(",")) if self.ingest_tenants else None

    @property
    def ingest_id(self) -> str:
        """Ingest's client id, which names its persistent session and its spool folder:
        MOCLO_INGEST_CLIENT_ID if set, else its MQTT username (moclo's brokers replace any id
        with the username, so paho's id, the broker's and the folder's agree), else
        `moclo-ingest`."""
        if self.ingest_client_id is not None:
            return self.ingest_client_id
        username = self.mqtt.username
        if username and re.fullmatch(_CLIENT_ID, username) and len(username) <= 64:
            return username
        return DEFAULT_INGEST_CLIENT_ID

    @property
    def influx_display(self) -> str:
        """The InfluxDB URL without its password, for logs and messages (like `mqtt.display()`)."""
        return display_url(self.influx_url)

    @property
    def influx_token_value(self) -> str | None:
        return self.influx_token.get_secret_value() if self.influx_token else None

    @property
    def broker_auth_path(self) -> Path | None:
        """The folder for the broker's generated files, or None when that is switched off."""
        if self.broker_auth_dir == "off":
            return None
        if self.broker_auth_dir is not None:
            return Path(self.broker_auth_dir)
        return Path(self.registry).parent / "broker"

    @property
    def mqtt(self) -> MqttEndpoint:
        """The broker, with MOCLO_MQTT_USERNAME/PASSWORD over the URL's and the CA file."""
        endpoint = MqttEndpoint.from_url(self.mqtt_url)
        return replace(
            endpoint,
            username=self.mqtt_username or endpoint.username,
            password=(
                self.mqtt_password.get_secret_value() if self.mqtt_password else endpoint.password
            ),
            ca_file=self.mqtt_ca_file,
        )

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from the environment, with non-None `overrides` (command-line flags) on top."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {
            name: environ[var] for name, var in ENVIRONMENT.items() if environ.get(var)
        }
        from_files = _secrets_from_files(environ)
        values.update(from_files)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as exc:
            raise SettingsError(_explain(exc, set(overrides) - {None}, set(from_files))) from None


# Secrets may also come from a file named by VARIABLE_FILE (docker-compose and Kubernetes hand
# secrets to containers as files), e.g. MOCLO_MQTT_PASSWORD_FILE=/run/secrets/mqtt-password.
SECRET_FILES = {
    name: ENVIRONMENT[name] + "_FILE" for name in ("mqtt_password", "influx_token", "webhook_url")
}


def _secrets_from_files(environ: Mapping[str, str]) -> dict[str, str]:
    values = {}
    for name, file_var in SECRET_FILES.items():
        path = environ.get(file_var)
        if not path:
            continue
        if environ.get(ENVIRONMENT[name]):
            raise SettingsError(f"set {ENVIRONMENT[name]} or {file_var}, not both")
        try:
            value = Path(path).read_text().rstrip("\r\n")
        except OSError as exc:
            raise SettingsError(f"{file_var}: cannot read {path}: {exc.strerror}") from None
        if not value:
            raise SettingsError(f"{file_var}: {path} is empty")
        values[name] = value
    return values


def _explain(exc: ValidationError, flags: set[str], from_files: set[str]) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        name = str(error["loc"][0]) if error["loc"] else "settings"
        where = ENVIRONMENT.get(name, name)
        if name in from_files:
            where = f"the content of {SECRET_FILES[name]}"
        elif name in flags:
            where = f"--{name.replace('_', '-')} (or {where})"
        message = str(error["msg"]).removeprefix("Value error, ")
        # Never echo a secret: tokens are left out, passwords in URLs masked.
        got = (
            ""
            if name in ("influx_token", "webhook_url", "mqtt_password")
            else "; got " + display_url(repr(error.get("input")))
        )
        lines.append(f"{where} {message}{got}")
    return "invalid settings:\n  " + "\n  ".join(lines)
