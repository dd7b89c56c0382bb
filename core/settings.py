"""Configuration, declared once: environment variables, overridden by command-line flags.

Each field carries its documentation: `title`, a line for `moclo --help`; `description`, the
full text of its row in docs/configuration.md; `shown_default` where the default is better
said in words. Both are generated from here (`python -m moclo.settings_doc`), so they cannot
drift apart. This module is over 400 lines for that reason: the documentation of every
setting is declared with it.
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
    "mqtt_protocol": "MOCLO_MQTT_PROTOCOL",
    "influx_url": "MOCLO_INFLUX_URL",
    "influx_db": "MOCLO_INFLUX_DB",
    "influx_token": "MOCLO_INFLUX_TOKEN",
    "max_reading_age": "MOCLO_MAX_READING_AGE",
    "desired_grace": "MOCLO_DESIRED_GRACE",
    "topic_prefix": "MOCLO_TOPIC_PREFIX",
    "ingest_client_id": "MOCLO_INGEST_CLIENT_ID",
    "ingest_tenants": "MOCLO_INGEST_TENANTS",
    "ingest_share_group": "MOCLO_INGEST_SHARE_GROUP",
    "engine_url": "MOCLO_ENGINE_URL",
    "engine_worker": "MOCLO_ENGINE_WORKER",
    "engine_partitions": "MOCLO_ENGINE_PARTITIONS",
    "spool_dir": "MOCLO_SPOOL_DIR",
    "http_listen": "MOCLO_HTTP_LISTEN",
    "serve_listen": "MOCLO_SERVE_LISTEN",
    "rules_file": "MOCLO_RULES_FILE",
    "automations_file": "MOCLO_AUTOMATIONS_FILE",
    "registry": "MOCLO_REGISTRY",
    "unregistered": "MOCLO_UNREGISTERED",
    "broker_auth_dir": "MOCLO_BROKER_AUTH_DIR",
    "webhook_url": "MOCLO_WEBHOOK_URL",
    "webhook_min_severity": "MOCLO_WEBHOOK_MIN_SEVERITY",
    "webhook_secret": "MOCLO_WEBHOOK_SECRET",
    "notify_file": "MOCLO_NOTIFY_FILE",
    "notify_outbox": "MOCLO_NOTIFY_OUTBOX",
    "notify_listen": "MOCLO_NOTIFY_LISTEN",
    "notify_link_secret": "MOCLO_NOTIFY_LINK_SECRET",
    "public_url": "MOCLO_PUBLIC_URL",
    "map_tiles": "MOCLO_MAP_TILES",
    "map_attribution": "MOCLO_MAP_ATTRIBUTION",
}


_CLIENT_ID = r"^[A-Za-z0-9._-]+$"
_ENGINE_URL = re.compile(r"amqp://[^\s/@,:]+(:\d{1,5})?(,[^\s/@,:]+(:\d{1,5})?)*/?")
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


def map_tile_source(template: str) -> str | None:
    """The Content-Security-Policy source of a tile URL template (`https://*.tile.example.org`
    for `https://{s}.tile.example.org/{z}/{x}/{y}.png`), or None if it is not one."""
    if any(c in template for c in "'\"; \t\n,") or not all(
        part in template for part in ("{z}", "{x}", "{y}")
    ):
        return None
    parts = urlsplit(template)
    host = parts.netloc
    if any(c in host for c in "*\\"):  # a wildcard of the template's own: any host at all
        return None
    if host.startswith("{s}."):
        host = "*." + host[len("{s}.") :]
    if parts.scheme not in ("http", "https") or not host or any(c in host for c in "{}@"):
        return None
    return f"{parts.scheme}://{host}"


class SettingsError(ValueError):
    """A setting is wrong; the message names the variable or flag and what is allowed."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mqtt_url: str = Field(
        default="mqtt://127.0.0.1:1883",
        title="broker, mqtt://[user:password@]host[:port]",
        description="`mqtt://user:password@host:port`; `mqtts://` for TLS",
    )
    mqtt_username: str | None = Field(
        default=None,
        title="broker account, over the URL's",
        description="the broker account, over the URL's",
    )
    # A secret: from the environment only, never a flag (it would show in `ps`).
    mqtt_password: SecretStr | None = Field(
        default=None,
        title="its password; environment only, never a flag",
        description="its password; environment only: `--mqtt-url` with a password in it is "
        "refused, as a flag shows in `ps`",
    )
    mqtt_ca_file: str | None = Field(
        default=None,
        title="CA certificate to trust for mqtts:// (e.g. .moclo/tls/ca.crt)",
        description="the CA certificate to trust for `mqtts://` (e.g. the local stack's "
        "`.moclo/tls/ca.crt`); default: the system's",
    )
    mqtt_protocol: Literal["5", "3.1.1"] = Field(
        default="5",
        title="5, or 3.1.1 for the distributed engine (clients named by their login)",
        description="`5`: the simulators and the CLI's paho clients speak MQTT 5 (serve's "
        "live stream speaks 3.1.1 on every broker); `3.1.1` for the distributed engine, which "
        "drops MQTT 5 clients (RabbitMQ 3.10) and admits a login only under its username as "
        "client id: every client then speaks 3.1.1 and is named by its login; see "
        "[Scale-out on the engine](scale.md)",
    )
    influx_url: str = Field(
        default="http://127.0.0.1:8086",
        title="InfluxDB 1.x, or 2.x/3.x via /write and /query; "
        "http://user:password@host:port only here, never in --influx-url",
        description="InfluxDB 1.x, or 2.x/3.x (same API); `http://user:password@host:8086` "
        "logs in to 1.x with basic auth, and, like the MQTT password, is refused in "
        "`--influx-url` (it would show in `ps`) and shown as `user:***@`",
    )
    influx_db: str = Field(
        default="moclo",
        min_length=1,
        title="database, or bucket on 2.x/3.x",
        description="database; on 2.x/3.x the bucket of that name",
    )
    influx_token: SecretStr | None = Field(
        default=None,
        title="token for InfluxDB 2.x/3.x; environment only, never a flag, "
        "so it does not show in `ps`",
        description="sent as `Authorization: Token …`; environment only, never a flag "
        "(it would show in `ps`)",
    )
    # Seconds: how old a reading ingest still accepts (devices that were offline upload their
    # backlog). The database's retention, read by ingest, narrows it further when shorter.
    max_reading_age: float = Field(
        default=90 * 86_400.0,
        title="the oldest reading ingest accepts, e.g. 36h; the database's retention, "
        "if shorter, is the limit",
        description="the oldest reading ingest accepts (`36h`, `7d`, …; older: "
        "`ts_out_of_window`); when the database keeps less (its default retention policy on "
        "1.x, the bucket's retention on 2.x where the token may read it, read at start, every "
        "10 minutes and after InfluxDB refused a point for its age), that is the limit and "
        "older readings are rejected as `beyond_retention`; where it cannot be read (a "
        "write-only token), ingest says so once and this setting alone applies: set it to the "
        "retention then, or readings InfluxDB refuses for their age are still judged by the "
        "alert rules, and alert changes they cause are not stored",
        json_schema_extra={"shown_default": "`90d`"},
    )
    topic_prefix: str = Field(
        default=DEFAULT_PREFIX,
        title="first topic level(s)",
        description="the first topic level(s) of every topic",
    )
    # Unset: ingest's MQTT username (the name moclo's brokers give its session whatever id it
    # sends, see `ingest_id`), or `moclo-ingest` without one. For brokers that do not override.
    ingest_client_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=_CLIENT_ID,
        title="ingest's MQTT client id, which names its persistent session",
        description="names ingest's persistent MQTT session: run one ingest per id (moclo's "
        "brokers name a session by its login whatever id is sent: one ingest per account)",
        json_schema_extra={"shown_default": "its MQTT username, else `moclo-ingest`"},
    )
    # Scaling out on one box (docs/performance.md, "Scale-out"). Tenants: this ingest
    # subscribes to these tenants' topics only, so several ingests can split a fleet by tenant,
    # each device always reaching the same one (alert state stays whole). Share group: an MQTT
    # 5 shared subscription, $share/GROUP/...: the broker deals messages to the group's members
    # in turn, so one device's readings reach different processes, and such an ingest stores
    # and validates but judges no alert rules.
    ingest_tenants: str | None = Field(
        default=None,
        title="ingest only these tenants (comma-separated)",
        description="ingest only these tenants (comma-separated; `--tenants`): several "
        "ingests split a fleet, each device always reaching the same one; see "
        "[Scale-out](performance.md#scale-out)",
        json_schema_extra={"shown_default": "all"},
    )
    ingest_share_group: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        title="share the telemetry with other ingests: $share/GROUP/..., "
        "no alert rules judged there",
        description="share the telemetry with the other ingests of this group "
        "(`$share/GROUP/…`, `--share-group`); they store and validate, and judge no alert "
        "rules; see [Scale-out](performance.md#scale-out)",
    )
    engine_url: str | None = Field(
        default=None,
        title="consume partitions from the distributed engine (RabbitMQ) at "
        "amqp://host:port[,host:port…]",
        description="consume the telemetry partitions of the distributed engine (RabbitMQ, "
        "`--engine-url amqp://host:port[,host:port…]`, nodes tried in order) instead of "
        "subscribing over MQTT; the login is ingest's MQTT login; see "
        "[Scale-out on the engine](scale.md)",
    )
    engine_worker: str = Field(
        default="0/1",
        pattern=r"^\d{1,4}/\d{1,4}$",
        title="this worker's number and the number of workers, I/W",
        description="this worker's number and the number of workers (`--engine-worker I/W`, "
        "from "
        "0/W to W-1/W): worker I consumes partitions I, I+W, … first and stands by for the "
        "rest; see [Scale-out on the engine](scale.md)",
    )
    engine_partitions: int = Field(
        default=4,
        ge=1,
        le=1024,
        title="partitions of the telemetry on the engine (the same for every worker)",
        description="how many partitions the telemetry is spread over on the engine "
        "(`--engine-partitions`); every worker must say the same; see "
        "[Scale-out on the engine](scale.md)",
    )
    spool_dir: str = Field(
        default=".moclo/spool",
        min_length=1,
        title="ingest's spool and alert state, a folder per client id",
        description="on-disk buffer for when InfluxDB is down (a folder per client id, 0700, "
        "its files 0600: it holds every tenant's raw readings; an older, looser folder is "
        "tightened at start); keep it on a persistent volume",
    )
    http_listen: str = Field(
        default="127.0.0.1:9108",
        pattern=r"^(off|[^\s:]*:\d{1,5})$",
        title="where ingest serves /healthz and /metrics, or off",
        description="where ingest serves `/healthz` and `/metrics`; `off` to disable",
    )
    serve_listen: str = Field(
        default="127.0.0.1:8080",
        pattern=r"^[^\s:]*:\d{1,5}$",
        title="where `moclo serve` serves the dashboard and API",
        description="where `moclo serve` (and `moclo up`) serves the dashboard and the HTTP "
        "API (`--listen`)",
    )
    rules_file: str | None = Field(
        default=None,
        title="alert rules file (TOML) over each device type's defaults",
        description="alert rules (TOML) over each device type's defaults; see [Alerts](alerts.md)",
    )
    automations_file: str | None = Field(
        default=None,
        title="automations file (TOML): alert changes that act on devices",
        description="automations (TOML): alert changes that send a command, change a desired "
        "state or send a notice; see [Acting on devices](acting.md#automations)",
    )
    # Who may do what: registered devices, service and app accounts, API tokens (access/).
    registry: str = Field(
        default=".moclo/registry.sqlite",
        min_length=1,
        title="devices, accounts and API tokens, an SQLite file",
        description="devices, broker accounts and API tokens (SQLite); see [Security](security.md)",
    )
    # Readings of devices that are not registered (or revoked): `reject` them (reason
    # unregistered_device), `flag` them (stored, counted, and each such device noted in
    # moclo_unregistered; for open demos), or `off`: no registry check at all.
    unregistered: Literal["reject", "flag", "off"] = Field(
        default="reject",
        title="ingest, for readings of devices not in the registry: reject, flag (store and "
        "note them) or off (no check)",
        description="what ingest does with readings of devices not in the registry (or "
        "revoked): `reject` (reason `unregistered_device`), `flag` (store them, count them in "
        "`/metrics`, note each device in `moclo_unregistered`; for open demos) or `off` (no "
        "check)",
    )
    # Where registry changes regenerate Mosquitto's password and ACL files: by default a
    # `broker` folder beside the registry file; `off` to never write them.
    broker_auth_dir: str | None = Field(
        default=None,
        min_length=1,
        title="where registry changes rewrite the broker's password and ACL files, or off",
        description="where registry changes rewrite Mosquitto's `passwords` and `acl` files; "
        "`off` to never write them",
        json_schema_extra={"shown_default": "`broker` beside the registry"},
    )
    # A webhook URL often carries a token: a secret, from the environment only.
    webhook_url: SecretStr | None = Field(
        default=None,
        title="POST each alert change here as JSON; environment only, never a flag, as the "
        "URL may carry a token",
        description="POST every alert change here; environment only (it may carry a token); "
        "a URL that cannot be sent to (a host that is not a valid domain name, a control "
        "character) stops the start with exit 2, never shown; a send that fails is counted "
        "and logged without the URL's path or query, and ingest carries on",
    )
    webhook_min_severity: Literal["info", "warning", "critical"] = Field(
        default="info",
        title="the least severity sent to the webhook: info, warning or critical",
        description="only changes of at least this severity go to the webhook",
    )
    # Signs each webhook POST (X-Moclo-Signature), so a receiver can tell it came from us.
    webhook_secret: SecretStr | None = Field(
        default=None,
        min_length=16,
        title="sign each webhook POST with this secret (HMAC-SHA256); environment only",
        description="signs every webhook POST: `X-Moclo-Timestamp` and `X-Moclo-Signature: "
        "sha256=HEX`, the HMAC-SHA256 of `TIMESTAMP.BODY` under this secret (at least 16 "
        "characters; environment or `_FILE` only, never a flag, never logged); see "
        "[Signed webhooks](notifications.md#signed-webhooks)",
    )
    # The notifier (`moclo notify run`): who is told what, and where it keeps what it owes.
    notify_file: str | None = Field(
        default=None,
        title="the notify file (TOML): people, channels, on-call, routes; "
        "`moclo up` starts the notifier when set",
        description="people, their channels, on-call rotations and routes (TOML); `moclo "
        "notify run` needs it, and `moclo up` starts the notifier when it is set; see "
        "[Notifications](notifications.md)",
    )
    notify_outbox: str = Field(
        default=".moclo/notify/outbox.sqlite",
        min_length=1,
        title="the notifier's outbox (SQLite): what it owes, kept across restarts",
        description="the notifier's outbox (SQLite): messages waiting for their group, a "
        "retry or their person's quiet hours, escalations due, timeline rows not yet in "
        "InfluxDB; keep it on a persistent volume",
    )
    notify_listen: str = Field(
        default="127.0.0.1:9109",
        pattern=r"^(off|[^\s:]*:\d{1,5})$",
        title="where the notifier serves /healthz and /metrics, or off",
        description="where `moclo notify run` serves `/healthz` and `/metrics`; `off` to disable",
    )
    # Shared by the notifier (which signs) and serve (which checks): a secret.
    notify_link_secret: SecretStr | None = Field(
        default=None,
        min_length=16,
        title="signs the one-tap acknowledgement links; environment only",
        description="signs the one-tap acknowledgement link each message carries (the "
        "notifier and `moclo serve` need the same one; at least 16 characters; environment "
        "or `_FILE` only); without it, or without `MOCLO_PUBLIC_URL`, messages carry no link. "
        "`moclo up` makes one when it is not set and keeps it in its data folder",
    )
    public_url: str | None = Field(
        default=None,
        title="the dashboard's address as people reach it (for links in messages)",
        description="the dashboard's address as people reach it, e.g. "
        "`https://moclo.example.org`: the acknowledgement links in messages start with it",
    )

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must look like https://moclo.example.org (or http://)")
            value = value.rstrip("/")
        return value

    # The dashboard's maps: none by default, so the page fetches nothing from the internet
    # unless an operator chooses a tile server (and its terms, which usually ask for credit).
    map_tiles: str = Field(
        default="",
        title="the dashboard maps' tile server, a URL template; empty: no tiles",
        description="tiles under the dashboard's maps, a URL template such as "
        "`https://tile.example.org/{z}/{x}/{y}.png` (`{s}` may begin the host); empty: the "
        "maps draw positions on a plain background with a scale. The page's "
        "Content-Security-Policy then allows images from that host",
        json_schema_extra={"shown_default": "none (no tiles)"},
    )
    map_attribution: str = Field(
        default="",
        max_length=300,
        title="the credit the tile server asks for, shown on the maps",
        description="the credit the tile server's terms ask for, shown in a corner of the maps",
        json_schema_extra={"shown_default": "none"},
    )

    @field_validator("map_tiles")
    @classmethod
    def _map_tiles(cls, value: str) -> str:
        if value and map_tile_source(value) is None:
            raise ValueError(
                "must be an https:// (or http://) URL template with {z}, {x} and {y}, and no "
                "quote or space, e.g. https://tile.example.org/{z}/{x}/{y}.png; `{s}` may only "
                "begin the host ({s}.tile.example.org)"
            )
        return value

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

    # Seconds a device has to apply a new desired state before an alert says it has not.
    desired_grace: float = Field(
        default=600.0,
        title="how long a device may take to apply a desired state before an alert, e.g. 10m",
        description="how long a device may take to report (`reported`) a new desired state "
        "before ingest raises `desired_not_applied` for it (`30s`, `10m`, `2h`, …); the alert "
        "is resolved when the device reports that version",
        json_schema_extra={"shown_default": "`10m`"},
    )

    @field_validator("max_reading_age", "desired_grace", mode="before")
    @classmethod
    def _max_reading_age(cls, value: object) -> object:
        # A duration like the command line's (90d, 36h); a number is seconds.
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("max_reading_age", "desired_grace")
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

    @field_validator("engine_url")
    @classmethod
    def _engine_nodes(cls, value: str | None) -> str | None:
        if value is not None and not _ENGINE_URL.fullmatch(value):
            raise ValueError(
                "must look like amqp://HOST[:PORT][,HOST[:PORT]…], without a login (the "
                "engine is logged in to with ingest's MQTT login)"
            )
        return value

    @field_validator("engine_worker")
    @classmethod
    def _worker_within_workers(cls, value: str) -> str:
        index, workers = (int(part) for part in value.split("/"))
        if workers < 1 or index >= workers:
            raise ValueError(f"{value!r}: workers are numbered 0 to W-1 of W (e.g. 0/2 and 1/2)")
        return value

    @property
    def worker(self) -> tuple[int, int]:
        """(this worker's number, how many workers) on the engine."""
        index, workers = self.engine_worker.split("/")
        return int(index), int(workers)

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
    def webhook_secret_value(self) -> bytes | None:
        return self.webhook_secret.get_secret_value().encode() if self.webhook_secret else None

    @property
    def notify_link_secret_value(self) -> bytes | None:
        secret = self.notify_link_secret
        return secret.get_secret_value().encode() if secret else None

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
            mqtt311=self.mqtt_protocol == "3.1.1",
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
    name: ENVIRONMENT[name] + "_FILE"
    for name in (
        "mqtt_password",
        "influx_token",
        "webhook_url",
        "webhook_secret",
        "notify_link_secret",
    )
}
# Never echoed in an error, never a flag.
SECRETS = frozenset(SECRET_FILES)
# Their documentation, as the fields carry theirs: a line for --help, a row for the docs.
SECRET_FILES_TITLE = "a file holding that secret instead, as docker-compose hands secrets over"
SECRET_FILES_DESCRIPTION = (
    "the secret is read from this file instead (a trailing newline is dropped), as "
    "docker-compose and Kubernetes hand secrets to containers; setting both the variable and "
    "its `_FILE` is an error"
)


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
        got = "" if name in SECRETS else "; got " + display_url(repr(error.get("input")))
        lines.append(f"{where} {message}{got}")
    return "invalid settings:\n  " + "\n  ".join(lines)
