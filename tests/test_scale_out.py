"""Several ingests on one box: split by tenant (each device always reaches the same ingest, so
alerts are judged on whole histories), or sharing one subscription through an MQTT 5 shared
subscription (the broker deals messages to the members in turn; such an ingest stores and
validates its share and judges no rules). Real broker, real InfluxDB, ingests in this process
on threads of their own."""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack

import pytest

from core.settings import Settings, SettingsError
from devices.topics import telemetry_topic
from ingest.options import IngestOptions
from ingest.service import Ingest, subscriptions
from tests.conftest import RunningIngest
from tests.helpers import Influx, cow_json, publish_all, wait_until

COWS = 20
READINGS = 30  # per cow


def cow_messages(
    settings: Settings, tenant: str, *, fever: bool = False
) -> list[tuple[str, bytes]]:
    """READINGS readings of each of COWS cows of `tenant`, a minute apart; with `fever`, every
    reading of cow-0000 at 40.5 °C (the default rule raises `fever` after 3)."""
    start = int(time.time()) - READINGS * 60
    messages = []
    for n in range(READINGS):
        for cow in range(COWS):
            temperature = {"body_temp_c": 40.5} if fever and cow == 0 else {}
            messages.append(
                (
                    telemetry_topic(settings.topic_prefix, tenant, "cow_tracker", f"cow-{cow:04d}"),
                    cow_json(start + 60 * n, n, **temperature),
                )
            )
    return messages


def member(settings: Settings, n: int, **changes: str) -> Settings:
    return settings.model_copy(update={"ingest_client_id": f"{settings.ingest_id}-{n}", **changes})


def test_the_subscriptions_of_each_mode(settings: Settings) -> None:
    prefix = settings.topic_prefix

    def downlink(t: str) -> tuple[str, ...]:
        # What devices send back, and what people ask for (ingest/downlink/).
        return (
            f"{prefix}/{t}/+/+/commands/get",
            f"{prefix}/{t}/+/+/command-results",
            f"{prefix}/{t}/+/+/desired/get",
            f"{prefix}/{t}/+/+/reported",
            f"{prefix}/{t}/command-requests/#",
            f"{prefix}/{t}/desired-requests/#",
        )

    assert subscriptions(settings) == (
        f"{prefix}/+/+/+/telemetry",
        f"{prefix}/+/acks/#",
        *downlink("+"),
    )
    farms = settings.model_copy(update={"ingest_tenants": "farm-a,farm-b"})
    assert subscriptions(farms) == (
        f"{prefix}/farm-a/+/+/telemetry",
        f"{prefix}/farm-b/+/+/telemetry",
        f"{prefix}/farm-a/acks/#",
        f"{prefix}/farm-b/acks/#",
        *downlink("farm-a"),
        *downlink("farm-b"),
    )
    group = settings.model_copy(update={"ingest_share_group": "g1"})
    assert subscriptions(group) == (f"$share/g1/{prefix}/+/+/+/telemetry",)
    # A member of a share group runs no command gateway; a whole ingest does.
    assert Ingest(group, asyncio.Event()).pipeline.gateway is None
    assert Ingest(settings, asyncio.Event()).pipeline.gateway is not None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MOCLO_INGEST_TENANTS": "farm,Clinic"}, "'Clinic' is not a tenant id"),
        ({"MOCLO_INGEST_TENANTS": " , "}, "name at least one tenant"),
        ({"MOCLO_INGEST_SHARE_GROUP": "a/b"}, "MOCLO_INGEST_SHARE_GROUP"),
    ],
    ids=["upper-case", "empty", "slash"],
)
def test_scale_out_settings_are_checked(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.load(environ)


def test_ingests_split_by_tenant_store_everything_once_and_judge_whole_histories(
    settings: Settings, influx: Influx
) -> None:
    options = IngestOptions(snapshot_every_s=3600)
    with ExitStack() as running:
        ingests = {
            tenant: running.enter_context(
                RunningIngest(member(settings, n, ingest_tenants=tenant), options)
            )
            for n, tenant in enumerate(("farm-a", "farm-b"))
        }
        published = publish_all(
            settings.mqtt_url,
            cow_messages(settings, "farm-a", fever=True) + cow_messages(settings, "farm-b"),
        )
        wait_until(
            lambda: influx.count("cow_tracker", "seq") == published,
            what=f"{published} readings stored",
        )
        for tenant, ingest in ingests.items():
            wait_until(
                lambda i=ingest: i.stats.readings_stored == COWS * READINGS,  # type: ignore[misc]
                what=f"{tenant}'s ingest to store only {tenant}'s readings",
            )
        raised = [a for a in ingests["farm-a"].alerts if getattr(a, "state", "") == "raised"]
        assert [(a.device_id, a.rule) for a in raised] == [("cow-0000", "fever")]  # type: ignore[attr-defined]
        assert ingests["farm-b"].alerts == []
    assert influx.count("cow_tracker", "seq", "tenant = 'farm-a'") == COWS * READINGS


def test_a_share_group_divides_the_readings_and_stores_each_exactly_once(
    settings: Settings, influx: Influx
) -> None:
    group = f"g{settings.ingest_id[-6:]}"
    options = IngestOptions(snapshot_every_s=3600)
    with ExitStack() as running:
        members = [
            running.enter_context(
                RunningIngest(member(settings, n, ingest_share_group=group), options)
            )
            for n in range(2)
        ]
        published = publish_all(settings.mqtt_url, cow_messages(settings, "farm", fever=True))
        wait_until(
            lambda: influx.count("cow_tracker", "seq") == published,
            what=f"{published} readings stored",
        )
        wait_until(
            lambda: sum(m.stats.messages for m in members) == published,
            what="every message handled by one member",
        )
        shares = [m.stats.readings_stored for m in members]
        assert sum(shares) == published and all(shares), shares  # both took part
        assert all(m.alerts == [] for m in members)  # no rules judged in a share group
    distinct = influx.query('SELECT count(distinct("seq")) FROM "cow_tracker" GROUP BY "device_id"')
    assert sum(int(row["count"]) for row in distinct) == published
    assert influx.count("moclo_alerts", "state") == 0
