"""The cardiology case end to end: a simulated pacemaker that obeys, behind a real ingest on
real Mosquitto and InfluxDB. A clinician of the patient's tenant reads it out and lowers the
rate it paces at, and it does; an operator of the same tenant is refused both, and who changed
what is one query."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from core.settings import Settings
from devices.pacemaker import ReadOut
from devices.topics import telemetry_subscription
from ingest.options import IngestOptions
from tests.conftest import RunningIngest
from tests.gateway_helpers import StatusWatch, ask, registry_with
from tests.helpers import Influx, Subscriber, wait_until
from tests.test_obeying import TENANT, _options, running
from tests.test_obeying_gateway import answered_at, readings_of


@pytest.fixture
def ward(settings: Settings) -> Iterator[tuple[Settings, StatusWatch, Subscriber]]:
    registry_with(
        settings,
        [(TENANT, "pacemaker", "pacemaker-0001")],
        [("clinician", "dr-lee", TENANT), ("operator", "olga", TENANT)],
    )
    readings = Subscriber(settings.mqtt_url, telemetry_subscription(settings.topic_prefix))
    watch = StatusWatch(settings)
    with RunningIngest(settings, IngestOptions(linger_s=0.02)):
        yield settings, watch, readings
    watch.close()
    readings.close()


def command(settings: Settings, account: str, name: str, **args: int) -> str:
    command_id = uuid.uuid4().hex[:12]
    body = {"id": command_id, "device": "pacemaker-0001", "name": name, "args": args}
    ask(settings, TENANT, account, body)
    return command_id


def test_a_clinician_reads_out_and_lowers_the_rate_an_operator_may_not(
    ward: tuple[Settings, StatusWatch, Subscriber], influx: Influx
) -> None:
    settings, watch, readings = ward
    with running(settings, _options({"pacemaker": 1})):
        # The operator first: refused, and the pacemaker never hears of it.
        for name, args in (("read_out", {}), ("set_lower_rate", {"lower_rate_bpm": 80})):
            refused = watch.wait_for(command(settings, "olga", name, **args), "refused")
            assert (
                "clinicians" in refused["reason"] and "'olga' is an operator" in refused["reason"]
            )
        # The clinician: a full read-out, then a lower rate of 80 the heart is paced at.
        report = watch.wait_for(command(settings, "dr-lee", "read_out"), "succeeded")
        read_out = ReadOut.model_validate(report["output"])
        assert read_out.lower_rate_bpm != 80
        done = watch.wait_for(
            command(settings, "dr-lee", "set_lower_rate", lower_rate_bpm=80), "succeeded"
        )
        after = answered_at(done)
        paced = wait_until(
            lambda: len(r := readings_of(readings, "pacemaker-0001", after)) >= 5 and r,
            what="the pacemaker's readings after the change",
        )
        assert min(r["heart_rate_bpm"] for r in paced) >= 80
    # Who changed this pacemaker, when, to what: one query of moclo_commands.
    rows = wait_until(
        lambda: influx.query(
            'SELECT "issuer", "args", "status" FROM "moclo_commands" '
            "WHERE \"device_id\" = 'pacemaker-0001' AND \"name\" = 'set_lower_rate'"
        ),
        what="the change recorded",
    )
    assert [(r["issuer"], r["status"]) for r in rows if r["issuer"] == "dr-lee"][:1] == [
        ("dr-lee", "sent")
    ]
    assert {r["status"] for r in rows} >= {"refused", "sent", "succeeded"}
