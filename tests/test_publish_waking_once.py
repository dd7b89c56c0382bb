"""Ingest's publishing connection queues a batch of messages and wakes paho's network thread
once (`publish_waking_once`): against a real Mosquitto, every message arrives, in order, with
its retained flag, and the broker acknowledges each."""

from __future__ import annotations

import asyncio
import socket

from core.settings import Settings
from ingest.announce import Publication, Publisher
from tests.helpers import Subscriber, wait_until


class _CountingSocket:
    """paho's wake-up socket, counting the wake-ups written to it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sends = 0

    def send(self, data: bytes) -> int:
        self.sends += 1
        return self.sock.send(data)

    def close(self) -> None:
        self.sock.close()


def test_a_batch_is_published_in_order_and_acknowledged_with_one_wake_up(
    settings: Settings,
) -> None:
    prefix = f"{settings.topic_prefix}-wake"
    batch = [
        Publication(f"{prefix}/farm/alerts/cow-{n % 4}", f'{{"n":{n}}}'.encode(), n % 3 == 0)
        for n in range(300)
    ]
    subscriber = Subscriber(settings.mqtt_url, f"{prefix}/#")

    async def publish() -> tuple[bool, int, int]:
        publisher = Publisher(settings.mqtt, client_id=f"{settings.ingest_id}-wake", prefix=prefix)
        await publisher.start()
        try:
            client = publisher._client
            counting = _CountingSocket(client._sockpairW)  # type: ignore[arg-type]
            client._sockpairW = counting  # type: ignore[assignment]
            # The control: paho's own publish() wakes its thread once per message.
            infos = [client.publish(p.topic, p.payload, qos=1, retain=p.retain) for p in batch[:3]]
            for info in infos:
                await asyncio.to_thread(info.wait_for_publish, 20)
            control = counting.sends
            counting.sends = 0
            confirmed = await publisher.publish_all(batch[3:])
            return confirmed, control, counting.sends
        finally:
            await publisher.close()

    try:
        confirmed, control, sends = asyncio.run(publish())
        wait_until(lambda: len(subscriber.messages) >= len(batch), what="300 messages received")
    finally:
        subscriber.close()
    assert confirmed  # every PUBACK came
    assert (control, sends) == (3, 1)
    got = [(m.topic, bytes(m.payload)) for m in subscriber.messages]
    assert got == [(p.topic, p.payload) for p in batch]
    # Retained ones are delivered live with retain off (MQTT 5 default: retain as published
    # only with retain-as-published); what the broker kept is checked by a new subscriber.
    late = Subscriber(settings.mqtt_url, f"{prefix}/#")
    try:
        kept = {p.topic for p in batch if p.retain}
        wait_until(lambda: {m.topic for m in late.messages} >= kept, what="retained messages")
        assert all(m.retain for m in late.messages)
    finally:
        late.close()
