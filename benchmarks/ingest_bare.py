"""Contender (a) of the ingest benchmark: a bare paho-mqtt 2 subscriber that only counts.

MQTT 5, QoS 1, a persistent session (clean start off, a day's session expiry, a fixed client
id), paho's automatic acknowledgements, nothing parsed or stored. A ceiling for paho alone.

    python -m benchmarks.ingest_bare --mqtt-url URL --topic T --client-id ID --expected N

Once it has N messages it prints, as one JSON line, the first→last message interval and its
own CPU seconds at both messages (from /proc/self/stat, as the harness reads the others), then
keeps its connection until SIGTERM, so that the harness can read its peak memory and see any
message beyond N; on SIGTERM it disconnects (the session stays) and prints
{"messages_at_exit": count}.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from benchmarks.ingest_procfs import cpu_seconds

SESSION_EXPIRY_S = 86_400  # as ingest's


def session_client(client_id: str) -> paho.Client:
    return paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)


def connect(client: paho.Client, mqtt_url: str, topic: str) -> None:
    """Connects without clean start and subscribes at QoS 1 on every (re)connect."""
    host, port = mqtt_url.removeprefix("mqtt://").rsplit(":", 1)

    def on_connect(c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            raise SystemExit(f"the broker refused the connection: {reason}")
        c.subscribe(topic, qos=1)

    client.on_connect = on_connect
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = SESSION_EXPIRY_S
    client.connect(host, int(port), keepalive=30, clean_start=False, properties=properties)


def stop_on_sigterm() -> list[bool]:
    """A flag that SIGTERM (or Ctrl-C) sets; the main loop checks it between packets."""
    stopping = [False]

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stopping[0] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stopping


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mqtt-url", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--expected", type=int, required=True, help="messages, not readings")
    args = parser.parse_args(argv)
    expected: int = args.expected
    stopping = stop_on_sigterm()
    marks: dict[str, float] = {}
    count = 0

    def on_message(_c: paho.Client, _u: Any, _m: paho.MQTTMessage) -> None:
        nonlocal count
        count += 1
        if count == 1:
            marks["first"], marks["cpu_first"] = time.perf_counter(), cpu_seconds()
        if count == expected:
            marks["last"], marks["cpu_last"] = time.perf_counter(), cpu_seconds()

    client = session_client(args.client_id)
    client.on_message = on_message
    connect(client, args.mqtt_url, args.topic)
    reported = False
    while not stopping[0]:
        client.loop(timeout=0.1)
        if count >= expected and not reported:
            print(orjson.dumps({"messages": count, **marks}).decode(), flush=True)
            reported = True
    client.disconnect()
    print(orjson.dumps({"messages_at_exit": count}).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
