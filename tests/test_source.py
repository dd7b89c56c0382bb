"""The MQTT source against a real broker: what ingest holds stays within its window."""

from __future__ import annotations

import asyncio

from devices.topics import telemetry_subscription, telemetry_topic
from ingest.source import MqttSource
from moclo.settings import Settings
from tests.helpers import publish_all


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
            client_id=settings.ingest_client_id,
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
                seen.append(source.pending_count + len(batch))
                source.ack(batch)
                handled += len(batch)
        finally:
            await source.close()
        return seen

    held = asyncio.run(scenario())
    assert max(held) <= window, held
