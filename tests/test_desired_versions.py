"""Desired versions never repeat: a device applies a document only if its version is newer than
the last it applied, so a version moclo gives again (its records lost to retention, a new
database) would be ignored until the count passed the device's. Real Mosquitto and InfluxDB,
a real ingest, and the simulators' own device logic (simulators/downlink.py) on one
connection."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import orjson
import pytest

from core.mqtt import MqttEndpoint
from core.settings import Settings
from devices.topics import DESIRED, REPORTED, device_topic
from ingest.options import IngestOptions
from simulators.connections import DeviceConnections
from simulators.downlink import DeviceDownlink
from simulators.light import LightBehaviour
from tests.conftest import RunningIngest
from tests.gateway_helpers import StatusWatch, ask, registry_with
from tests.helpers import Influx, publish_all, wait_until

HOME = "home"
OPTIONS = IngestOptions(linger_s=0.02)


@pytest.fixture
def watch(settings: Settings) -> Iterator[StatusWatch]:
    registry_with(settings, [(HOME, "light", "light-1")], [("operator", "olga", HOME)])
    status = StatusWatch(settings)
    yield status
    status.close()


def light_at_version_5(settings: Settings) -> DeviceDownlink:
    """A light that applied desired version 5 (from an earlier moclo, whose records are gone)."""
    device = DeviceDownlink(
        settings.topic_prefix, HOME, "light", "light-1",
        LightBehaviour(random.Random(1), time.time()),
    )  # fmt: skip
    topic = device_topic(settings.topic_prefix, HOME, "light", "light-1", DESIRED)
    document = {"version": 5, "state": {"on": True}, "ts": time.time()}
    assert device.on_message(topic, orjson.dumps(document), time.time())  # it reports 5
    assert device.desired_version == 5
    return device


def connected(settings: Settings, device: DeviceDownlink) -> DeviceConnections:
    connections = DeviceConnections(
        MqttEndpoint.from_url(settings.mqtt_url), ["light-1"], downlinks={"light-1": device}
    )
    connections.start(timeout_s=20)
    return connections


def reported(influx: Influx, version: int) -> bool:
    """Whether ingest stored the device's report of `version`."""
    where = f'"kind" = \'reported\' AND "version" = {version}'
    return influx.count("moclo_commands", "version", where) > 0


def want_off(settings: Settings) -> None:
    ask(settings, HOME, "olga", {"device": "light-1", "state": {"on": False}}, desired=True)


def test_an_empty_moclo_continues_above_the_version_the_device_reports(
    settings: Settings, watch: StatusWatch, influx: Influx
) -> None:
    device = light_at_version_5(settings)
    with RunningIngest(settings, OPTIONS):
        connections = connected(settings, device)
        try:
            # The device asks on connect; ingest knows no document (version 0), and the device,
            # past it, says what it applied: version 5.
            wait_until(lambda: reported(influx, 5), what="the device's version 5")
            want_off(settings)
            watch.wait_for("light-1-desired-6", "succeeded")
            assert device.desired_version == 6
        finally:
            connections.close()
    assert not watch.updates("light-1-desired-1")  # version 1 was never given again


def test_after_a_restart_the_stored_report_is_a_version_too(
    settings: Settings, watch: StatusWatch, influx: Influx
) -> None:
    device = light_at_version_5(settings)
    with RunningIngest(settings, OPTIONS):  # hears the device's report, and stops
        connections = connected(settings, device)
        wait_until(lambda: reported(influx, 5), what="the device's version 5")
    try:
        with RunningIngest(settings, OPTIONS):  # knows version 5 only from moclo_commands
            want_off(settings)
            watch.wait_for("light-1-desired-6", "succeeded")
            assert device.desired_version == 6
    finally:
        connections.close()
    assert not watch.updates("light-1-desired-1")  # 6 at once, from the stored report


def test_a_change_made_while_the_device_was_away_is_sent_again_above_its_version(
    settings: Settings, watch: StatusWatch, influx: Influx
) -> None:
    device = light_at_version_5(settings)
    with RunningIngest(settings, OPTIONS):
        want_off(settings)  # ingest knows nothing of version 5 yet: this is its version 1
        watch.wait_for("light-1-desired-1", "sent")
        connections = connected(settings, device)  # the device ignores 1, and reports 5
        try:
            resent = watch.wait_for("light-1-desired-6", "succeeded")
            assert resent["issuer"] == "olga"  # still olga's change
            assert device.desired_version == 6
        finally:
            connections.close()
    rows = influx.query(
        'SELECT "version", "reason", "state" FROM "moclo_commands" '
        "WHERE \"kind\" = 'desired' AND \"status\" = 'sent'"
    )
    assert [r["version"] for r in rows] == [1, 6]
    assert "reported version 5" in rows[1]["reason"] and rows[1]["state"] == '{"on":false}'


def test_a_report_beyond_the_bound_read_back_at_a_restart_is_not_followed(
    settings: Settings, watch: StatusWatch, influx: Influx
) -> None:
    """A device's word is stored as said (2**62 here): the next ingest continues above the
    highest version it followed (7), not above the device's word."""
    topic = device_topic(settings.topic_prefix, HOME, "light", "light-1", REPORTED)
    with RunningIngest(settings, OPTIONS):
        for version in (7, 2**62):
            report = {"version": version, "state": {"on": True}, "ts": time.time()}
            publish_all(settings.mqtt_url, [(topic, orjson.dumps(report))])
            wait_until(lambda v=version: reported(influx, v), what=f"the report of {version}")
    with RunningIngest(settings, OPTIONS):
        want_off(settings)
        sent = watch.wait_for("light-1-desired-8", "sent")
        assert sent["issuer"] == "olga"
    assert [u["id"] for u in watch.updates()] == ["light-1-desired-8"]
