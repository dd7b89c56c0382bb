"""MQTT pieces shared by ingest, the simulators and the CLI: the endpoint and a paho client."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


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
) -> paho.Client:
    """An MQTT 5 paho client (of `client_class`) with the endpoint's credentials and TLS set."""
    client = client_class(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5,
        manual_ack=manual_ack,
    )
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    context = endpoint.ssl_context()
    if context is not None:
        client.tls_set_context(context)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client
