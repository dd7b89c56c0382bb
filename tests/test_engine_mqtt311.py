"""MQTT 3.1.1 mode (MOCLO_MQTT_PROTOCOL=3.1.1) for what `moclo up` runs beside ingest, on the
session's 3-node RabbitMQ cluster (issue 19, item 6): RabbitMQ 3.10 drops MQTT 5 clients, and
its auth service admits a logged-in client only under its username as client id.

A simulated fleet, spread over nodes r1 and r2 with the devices' own logins, publishes; `moclo
serve` (a serve account, at node r3) streams the readings to a dashboard's event stream. The
same serve in the default mode is the control: the engine never lets it subscribe.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from access.registry import DeviceSpec
from core.mqtt import MqttEndpoint, make_client
from core.settings import Settings
from moclo.stack import InfluxServer
from simulators.run import SimulationOptions, run_simulation
from tests.conftest import Engine, RunningServe
from tests.helpers import wait_until
from tests.test_serve import StreamReader

DEVICES = 4


def serve_settings(engine: Engine, influxdb: InfluxServer, tmp: Path, protocol: str) -> Settings:
    login = engine.registry.add_account("serve", f"serve-{uuid.uuid4().hex[:8]}")
    return Settings(
        mqtt_url=engine.cluster.nodes[2].mqtt_url,
        mqtt_username=login.username,
        mqtt_password=login.password,  # type: ignore[arg-type]  # pydantic makes it a SecretStr
        mqtt_protocol=protocol,  # type: ignore[arg-type]
        influx_url=influxdb.url,
        influx_db=f"engine_{uuid.uuid4().hex[:8]}",
        topic_prefix=engine.prefix,
        serve_listen="127.0.0.1:0",
        http_listen="off",
        registry=str(engine.registry.path),
        unregistered="reject",  # the engine's devices are registered: serve checks that too
        spool_dir=str(tmp / "spool"),
    )


def live(serve: RunningServe) -> bool:
    return bool(httpx.get(serve.url + "/healthz", timeout=5).json()["live_stream"])


def test_simulated_devices_reach_serves_live_stream_through_the_engine_over_mqtt311(
    engine: Engine, influxdb: InfluxServer, tmp_path: Path
) -> None:
    tenant = f"farm-{uuid.uuid4().hex[:8]}"
    issued = engine.registry.add_devices(
        [DeviceSpec(tenant, "cow_tracker", f"cow-{n:04d}") for n in range(1, DEVICES + 1)]
    )
    credentials = {c.username: (c.username, c.password) for _, c in issued}
    settings = serve_settings(engine, influxdb, tmp_path, "3.1.1")
    with RunningServe(settings) as serve:
        wait_until(lambda: live(serve), what="serve's live subscription on the engine")
        reader = StreamReader(f"{serve.url}/api/stream?tenant={tenant}", serve.admin_token)
        try:
            wait_until(lambda: reader.named("hello"), what="the stream open")
            nodes = tuple(
                (node.host, node.ports.mqtt) for node in engine.cluster.nodes[:2]
            )  # not r3, where serve is: the readings must cross the cluster
            result = run_simulation(
                MqttEndpoint(*nodes[0], username=None, password=None, tls=False, mqtt311=True),
                engine.prefix,
                SimulationOptions(
                    devices={"cow_tracker": DEVICES},
                    tenant=tenant,
                    interval_s=10.0,
                    duration_s=20.0,  # 2 readings per device (staggered starts)
                    burst=True,
                    per_device_connections=True,
                    credentials=credentials,
                    nodes=nodes,
                ),
            )
            assert result.acknowledged and result.readings == 2 * DEVICES

            def streamed() -> set[str]:
                return {item["device_id"] for batch in reader.named("readings") for item in batch}

            wait_until(
                lambda: streamed() == {f"cow-{n:04d}" for n in range(1, DEVICES + 1)},
                what="every simulated device's reading in serve's live stream",
            )
        finally:
            reader.close()


def test_mqtt5_stays_the_default_and_the_engine_mode_names_a_client_by_its_login() -> None:
    default = Settings(mqtt_url="mqtt://u:p@127.0.0.1:1883").mqtt
    engine = Settings(mqtt_url="mqtt://u:p@127.0.0.1:1883", mqtt_protocol="3.1.1").mqtt
    assert (default.protocol_version, default.client_id("moclo-serve-1")) == (5, "moclo-serve-1")
    assert (engine.protocol_version, engine.client_id("moclo-serve-1")) == (4, "u")
    assert make_client(default, "x")._protocol == 5
    assert make_client(engine, "x")._client_id == b"u"


def test_serve_in_the_default_mode_gets_no_live_stream_from_the_engine(
    engine: Engine, influxdb: InfluxServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The control for the first test: in the default mode serve's live stream (aiomqtt, MQTT
    3.1.1 on every broker) names itself `moclo-serve-…`, which the engine's auth service
    refuses for a login of another name; serve says so and keeps retrying."""
    settings = serve_settings(engine, influxdb, tmp_path, "5")
    with RunningServe(settings) as serve:

        def said_unavailable() -> bool:
            return any(
                "live stream: broker at" in r.getMessage() and "unavailable" in r.getMessage()
                for r in caplog.records
            )

        wait_until(said_unavailable, what="serve saying the engine does not answer it")
        assert not live(serve)
