"""Ingest on the distributed engine: its source from the settings (`MOCLO_ENGINE_URL`,
`MOCLO_ENGINE_WORKER`, `MOCLO_ENGINE_PARTITIONS`); see docs/scale.md."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pika

from core.settings import Settings
from devices.topics import COMMAND_REQUESTS, DESIRED_REQUESTS, DEVICE_UPLINK_LEVELS
from ingest.automations.runner import Automations
from ingest.batch_source import BatchSource
from ingest.control import Control
from ingest.downlink.wiring import Downlink
from ingest.engine_source import EngineSource
from ingest.options import IngestOptions
from ingest.partition_plan import PartitionPlan
from ingest.partition_state import PartitionAlertState
from ingest.pipeline import Pipeline
from ingest.spool import Spool
from storage.influx import InfluxClient


def bindings(settings: Settings) -> tuple[str, ...]:
    """The telemetry of all tenants, or of MOCLO_INGEST_TENANTS, as AMQP routing keys
    (`/` becomes `.`, `+` becomes `*`)."""
    tenants = settings.tenants or ("*",)
    return tuple(f"{settings.topic_prefix}.{tenant}.*.*.telemetry" for tenant in tenants)


def control_bindings(settings: Settings) -> tuple[str, ...]:
    """What the control queue takes, as AMQP routing keys (`/` becomes `.`): the devices'
    downlink answers, people's command and desired-state requests, their acknowledgements and
    the alert changes (the automations' triggers), of all tenants or of MOCLO_INGEST_TENANTS."""
    prefix = settings.topic_prefix
    keys: list[str] = []
    for tenant in settings.tenants or ("*",):
        keys += [
            f"{prefix}.{tenant}.*.*.{level.replace('/', '.')}" for level in DEVICE_UPLINK_LEVELS
        ]
        keys += [f"{prefix}.{tenant}.{level}.#" for level in (COMMAND_REQUESTS, DESIRED_REQUESTS)]
        keys += [f"{prefix}.{tenant}.acks.#", f"{prefix}.{tenant}.alerts.*"]
    return tuple(keys)


def engine_nodes(url: str) -> list[tuple[str, int]]:
    """The nodes of `amqp://HOST[:PORT][,HOST[:PORT]…]`, in the order given (port 5672 by
    default): a worker connects to the first that answers, and to the next when it fails."""
    nodes = []
    for node in url.removeprefix("amqp://").rstrip("/").split(","):
        parts = urlsplit(f"amqp://{node}")
        nodes.append((parts.hostname or "127.0.0.1", parts.port or 5672))
    return nodes


def engine_source(settings: Settings, options: IngestOptions) -> EngineSource:
    """The engine's partitions this worker consumes, with ingest's MQTT login."""
    assert settings.engine_url is not None
    mqtt = settings.mqtt
    credentials = pika.PlainCredentials(mqtt.username or "", mqtt.password or "")
    parameters = [
        pika.ConnectionParameters(host, port, "/", credentials, heartbeat=30, connection_attempts=1)
        for host, port in engine_nodes(settings.engine_url)
    ]
    worker, workers = settings.worker
    plan = PartitionPlan(
        partitions=settings.engine_partitions,
        worker=worker,
        workers=workers,
        bindings=bindings(settings),
        name=options.engine_partition_set,
        control_bindings=control_bindings(settings),
    )
    return EngineSource(
        parameters,
        plan,
        batch_messages=options.batch_messages,
        batch_bytes=options.batch_bytes,
        prefetch=max(1, options.window // settings.engine_partitions),
        window_bytes=options.window_bytes,
    )


def partition_state(
    settings: Settings,
    pipeline: Pipeline,
    source: BatchSource,
    client: InfluxClient,
    spool: Spool,
) -> PartitionAlertState:
    """Alert state kept per partition, in a folder the workers share (docs/scale.md)."""
    assert isinstance(source, EngineSource)
    return PartitionAlertState(
        Path(settings.spool_dir) / "partitions", pipeline, source, client, spool, settings.tenants
    )


def control(
    settings: Settings,
    pipeline: Pipeline,
    source: BatchSource,
    downlink: Downlink,
    client: InfluxClient,
    automations: Automations | None,
) -> Control:
    """The control queue's work: the gateway, the automations, acknowledgements sent on."""
    assert isinstance(source, EngineSource)
    return Control(
        downlink=downlink,
        pipeline=pipeline,
        automations=automations,
        source=source,
        client=client,
        tenants=settings.tenants,
    )
