"""MQTT pieces shared by ingest, the simulators and the CLI: the endpoint and a paho client."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

# Moclo's brokers name each connection by its login (`use_username_as_clientid`), so a login
# holds one connection at a time. A process that needs a second one (ingest's alert publisher,
# an acknowledgement beside serve's live stream) logs it in as `{username}~{purpose}` with the
# same password; the broker's files (access/broker.py) list those logins beside the account's.
# `~` appears in no account name, tenant or device id, and means nothing to Mosquitto's
# password and ACL files, to a topic filter or to a folder name.
CONNECTION_SEPARATOR = "~"


def connection_login(username: str, purpose: str) -> str:
    """The username of an account's second connection for `purpose` (`alerts`, `acks`)."""
    return f"{username}{CONNECTION_SEPARATOR}{purpose}"


class MqttUnreachable(ConnectionError):
    """The broker could not be reached or refused us; the message says what to do."""


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool
    ca_file: str | None = None  # trust this CA (e.g. the local stack's) instead of the system's
    # MQTT 3.1.1 instead of 5 (MOCLO_MQTT_PROTOCOL=3.1.1): for the distributed engine, whose
    # RabbitMQ 3.10 drops MQTT 5 clients without a CONNACK. Mosquitto keeps MQTT 5.
    mqtt311: bool = False

    @property
    def protocol_version(self) -> int:
        """The MQTT protocol level to connect with: 4 (3.1.1) or 5 (paho and aiomqtt say so)."""
        return 4 if self.mqtt311 else 5

    def client_id(self, wanted: str) -> str:
        """The client id to send: on the engine (3.1.1) a logged-in client's username, since
        its auth service refuses any other (access/engine_auth.py); elsewhere `wanted`
        (Mosquitto replaces it with the username anyway, `use_username_as_clientid`)."""
        return self.username if self.mqtt311 and self.username else wanted

    @classmethod
    def from_url(cls, url: str) -> MqttEndpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://[user:password@]host[:port] (or mqtts://)")
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError:
            raise ValueError("must have a port from 1 to 65535") from None
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme == "mqtts",
        )

    def for_connection(self, purpose: str) -> MqttEndpoint:
        """The endpoint for a second connection of this login (see CONNECTION_SEPARATOR); the
        same endpoint if there is no login (an open broker does not name clients by it)."""
        if not self.username:
            return self
        return replace(self, username=connection_login(self.username, purpose))

    def ssl_context(self) -> ssl.SSLContext | None:
        """For mqtts://: verifies the broker against `ca_file`, or the system's CAs."""
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.ca_file)

    def display(self) -> str:
        """The URL without its password, for logs and messages."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    def unreachable(self, timeout_s: float, detail: str) -> MqttUnreachable:
        return MqttUnreachable(
            f"could not connect to the MQTT broker at {self.display()} within {timeout_s:.0f}s "
            f"({detail}). Is it running? Set MOCLO_MQTT_URL or --mqtt-url to where it listens."
        )


def make_client(
    endpoint: MqttEndpoint,
    client_id: str,
    *,
    manual_ack: bool = False,
    client_class: type[paho.Client] = paho.Client,
    persistent_session: bool = False,
    nodelay: bool = False,
    mqtt311: bool = False,
) -> paho.Client:
    """An MQTT 5 paho client (of `client_class`) with the endpoint's credentials and TLS set.

    `persistent_session`: an MQTT 3.1.1 client with `clean_session=False` instead, the one
    kind of persistent session every broker keeps (a device's, for its downlink).
    `nodelay`: Nagle's algorithm off (`no_delay`), for a client whose small messages must not
    wait; it sets `on_socket_open`.
    `mqtt311`: a clean MQTT 3.1.1 client, for RabbitMQ 3.10, which drops MQTT 5 clients; an
    endpoint with `mqtt311` set asks for the same, and names the client by its login."""
    v311 = persistent_session or mqtt311 or endpoint.mqtt311
    client = client_class(
        CallbackAPIVersion.VERSION2,
        client_id=endpoint.client_id(client_id),
        protocol=paho.MQTTv311 if v311 else paho.MQTTv5,
        clean_session=(not persistent_session) if v311 else None,
        manual_ack=manual_ack,
    )
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    context = endpoint.ssl_context()
    if context is not None:
        client.tls_set_context(context)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    if nodelay:
        client.on_socket_open = lambda client, userdata, sock: no_delay(sock)
    return client


def no_delay(sock: Any) -> None:
    """Sends each message at once, whatever was written before it. paho leaves Nagle's
    algorithm on, so a client that wrote one small packet held the next until the broker's
    delayed ACK: 40 ms per command, measured with benchmarks/downlink_devices.py on the side
    playing the gateway (a PUBACK, then a PUBLISH)."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
