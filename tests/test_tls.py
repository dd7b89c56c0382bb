"""The local stack's TLS listener against a real Mosquitto: a client that trusts the local CA
connects and its messages flow; one that does not trust it is refused; with client
certificates, the certificate's common name is the username the ACL judges."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from access.tls import LocalTls, ensure_local_tls, issue_client_certificate
from core.mqtt import MqttEndpoint, make_client
from moclo.stack import MosquittoServer, free_port
from tests.helpers import wait_until


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> LocalTls:
    return ensure_local_tls(tmp_path_factory.mktemp("tls"))


def _connected(client: paho.Client, port: int) -> tuple[bool, list[object]]:
    """Connects once (no reconnecting); (whether the broker accepted, what happened)."""
    outcome: list[object] = []
    client.on_connect = lambda c, u, f, reason, p: outcome.append(reason)
    client.on_disconnect = lambda c, u, f, reason, p: outcome.append(reason)
    try:
        client.connect("127.0.0.1", port)
        deadline = time.monotonic() + 10
        while not outcome and time.monotonic() < deadline:
            client.loop(timeout=0.1)  # paho's own network step, bounded by the deadline
    except (ssl.SSLError, OSError) as exc:
        outcome.append(exc)
    finally:
        client.disconnect()
        sock = client.socket()
        if sock is not None:
            sock.close()
    assert outcome, "neither CONNACK nor a refusal within 10s"
    first = outcome[0]
    return isinstance(first, ReasonCode) and not first.is_failure, outcome


@pytest.fixture
def broker(tmp_path: Path, tls: LocalTls) -> Iterator[MosquittoServer]:
    server = MosquittoServer(tmp_path / "mq", free_port(), tls=tls, tls_port=free_port())
    server.start()
    yield server
    server.stop()


def test_the_local_ca_makes_a_certificate_python_trusts_for_localhost(tls: LocalTls) -> None:
    context = ssl.create_default_context(cafile=str(tls.ca_cert))
    certificate = ssl._ssl._test_decode_cert(str(tls.server_cert))  # type: ignore[attr-defined]
    names = {value for _, value in certificate["subjectAltName"]}
    assert {"localhost", "127.0.0.1"} <= names
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert (tls.ca_key.stat().st_mode & 0o777) == 0o600
    assert (tls.server_key.stat().st_mode & 0o777) == 0o600
    # Made once: a second call keeps the CA that clients already trust.
    before = tls.ca_cert.read_bytes()
    assert ensure_local_tls(tls.directory).ca_cert.read_bytes() == before


def test_a_client_trusting_the_local_ca_connects_and_publishes(
    broker: MosquittoServer, tls: LocalTls
) -> None:
    assert broker.tls_port is not None and broker.tls_url is not None
    endpoint = MqttEndpoint.from_url(broker.tls_url)
    trusted = make_client(
        MqttEndpoint(endpoint.host, endpoint.port, None, None, True, str(tls.ca_cert)), "tls-ok"
    )
    received: list[bytes] = []
    trusted.on_message = lambda c, u, m: received.append(m.payload)
    trusted.on_connect = lambda c, *a: c.subscribe("tls/test", qos=1)
    trusted.connect(endpoint.host, endpoint.port)
    trusted.loop_start()
    try:
        marker = f"over tls {time.time_ns()}".encode()

        def sent() -> bool:
            trusted.publish("tls/test", marker, qos=1)
            return marker in received

        wait_until(sent, what="a message through the TLS listener")
    finally:
        trusted.loop_stop()
        trusted.disconnect()


def test_a_client_that_does_not_trust_the_ca_is_refused(broker: MosquittoServer) -> None:
    assert broker.tls_port is not None
    # The system's CAs only, as a client without MOCLO_MQTT_CA_FILE has (a plain socket here:
    # paho leaks the socket of a handshake that fails inside its connect()).
    system_only = MqttEndpoint("127.0.0.1", broker.tls_port, None, None, True).ssl_context()
    assert system_only is not None
    with (
        socket.create_connection(("127.0.0.1", broker.tls_port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match=r"self-signed|unable to get local"),
    ):
        system_only.wrap_socket(raw, server_hostname="127.0.0.1")


def test_client_certificates_name_the_user_the_acl_judges(tmp_path: Path, tls: LocalTls) -> None:
    acl = tmp_path / "acl"
    acl.write_text("user farm.cow-1\ntopic write moclo/farm/cow_tracker/cow-1/telemetry\n")
    server = MosquittoServer(
        tmp_path / "mq",
        free_port(),
        password_file=_no_passwords(tmp_path),
        acl_file=acl,
        tls=tls,
        tls_port=free_port(),
        client_certificates=True,
    )
    server.start()
    try:
        assert server.tls_port is not None
        cert, key = issue_client_certificate(tls, "farm.cow-1")
        context = ssl.create_default_context(cafile=str(tls.ca_cert))
        context.load_cert_chain(str(cert), str(key))
        with_cert = paho.Client(CallbackAPIVersion.VERSION2, "cow-1", protocol=paho.MQTTv5)
        with_cert.tls_set_context(context)
        assert _connected(with_cert, server.tls_port)[0]
        without = paho.Client(CallbackAPIVersion.VERSION2, "nobody", protocol=paho.MQTTv5)
        without.tls_set_context(ssl.create_default_context(cafile=str(tls.ca_cert)))
        assert not _connected(without, server.tls_port)[0]
        assert "farm.cow-1" in server.log_since_start()  # logged in as its certificate's name
    finally:
        server.stop()


def _no_passwords(directory: Path) -> Path:
    """An empty password file: on the plain listener nobody logs in; certificates on TLS."""
    path = directory / "passwords"
    path.write_text("")
    return path
