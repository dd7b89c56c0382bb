"""`moclo alerts watch`: alert changes as they are published, for people or for programs.

This is a plain subscriber with no acknowledgement to manage, which is what aiomqtt does well.
"""

from __future__ import annotations

import json
import sys

import aiomqtt

from devices.topics import alert_subscription
from moclo.settings import Settings


async def watch_alerts(
    settings: Settings, *, tenant: str = "+", as_json: bool = False, count: int | None = None
) -> int:
    endpoint = settings.mqtt
    topic = alert_subscription(settings.topic_prefix, tenant)
    try:
        async with aiomqtt.Client(
            endpoint.host,
            endpoint.port,
            username=endpoint.username,
            password=endpoint.password,
        ) as client:
            await client.subscribe(topic, qos=1)
            print(
                f"watching {topic} on {endpoint.display()} (Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )
            seen = 0
            async for message in client.messages:
                payload = (
                    bytes(message.payload)
                    if isinstance(message.payload, (bytes, bytearray))
                    else str(message.payload).encode()
                )
                if as_json:
                    print(payload.decode(), flush=True)
                else:
                    print(_describe(payload), flush=True)
                seen += 1
                if count is not None and seen >= count:
                    return 0
    except aiomqtt.MqttError as exc:
        raise endpoint.unreachable(5, str(exc)) from None
    return 0


def _describe(payload: bytes) -> str:
    try:
        alert = json.loads(payload)
        mark = "ALERT" if alert["state"] == "raised" else "CLEAR"
        return (
            f"{alert['ts']}  {mark} {alert['severity']:<8} {alert['rule']:<11} "
            f"{alert['tenant']}/{alert['device_id']}: {alert['message']}  (id {alert['id']})"
        )
    except (ValueError, KeyError, TypeError):
        return f"(unreadable alert) {payload[:200]!r}"
