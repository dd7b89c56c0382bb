"""The MQTT source against a real broker: what ingest holds stays within its window."""

from __future__ import annotations

import asyncio

from core.settings import Settings
from devices.topics import telemetry_subscription, telemetry_topic
from ingest.source import MqttSource
from tests.helpers import publish_all, wait_until


def test_held_messages_never_exceed_the_window_even_after_acknowledgements(
    settings: Settings,
) -> None:
    # Mosquitto 2.0.11 honours the Receive Maximum only until the first PUBACK, then sends
    # everything queued (eclipse-mosquitto issue 2301); the source must hold the line itself.
    window = 50
    prefix = settings.topic_prefix

    async def scenario() -> list[int]:
        source = MqttSource(
            settings.mqtt,
            client_id=settings.ingest_id,
            subscription=telemetry_subscription(prefix),
            batch_messages=10,
            window=window,
        )
        await source.start()
        topic = telemetry_topic(prefix, "farm", "cow_tracker", "cow-1")
        await asyncio.to_thread(publish_all, settings.mqtt_url, [(topic, b"{}")] * 300)
        seen, handled = [], 0
        try:
            while handled < 300:
                batch = await asyncio.wait_for(source.next_batch(linger_s=0.05), 20)
                seen.append((source.pending_count, len(batch)))
                source.ack(batch)
                handled += len(batch)
        finally:
            await source.close()
        return seen

    held = asyncio.run(scenario())
    # Waiting: at most the window. Held: that plus the batch in hand, which paho's thread may
    # already have replaced in the window (it reads on while the consumer works).
    assert max(waiting for waiting, _ in held) <= window, held
    assert max(waiting + batch for waiting, batch in held) <= window + 10, held


def test_a_batch_is_bounded_by_payload_bytes_and_says_when_it_took_everything(
    settings: Settings,
) -> None:
    prefix = settings.topic_prefix
    big = b"x" * 1000

    async def scenario() -> list[tuple[int, bool]]:
        source = MqttSource(
            settings.mqtt,
            client_id=settings.ingest_id,
            subscription=telemetry_subscription(prefix),
            batch_messages=100,
            batch_bytes=10_000,
            window=200,
        )
        await source.start()
        topic = telemetry_topic(prefix, "farm", "cow_tracker", "cow-1")
        await asyncio.to_thread(publish_all, settings.mqtt_url, [(topic, big)] * 25)
        seen = []
        try:
            await asyncio.to_thread(
                wait_until, lambda: source.messages_received == 25, what="all 25 received"
            )
            while sum(size for size, _ in seen) < 25:
                batch = await asyncio.wait_for(source.next_batch(linger_s=0.5), 20)
                seen.append((len(batch), source.caught_up))
                source.ack(batch)
        finally:
            await source.close()
        return seen

    # 10 x 1000 bytes fill a batch; only the last one took everything there was.
    assert asyncio.run(scenario()) == [(10, False), (10, False), (5, True)]
