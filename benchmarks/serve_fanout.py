"""The live hub's fan-out tick, timed: the newest reading of D devices (two tenants) offered
to S open streams, as `moclo serve` does every 250 ms. Compares the hub's tick (each reading
serialised once, each distinct filter's batch joined once and shared) with the per-stream
loop it replaced (each stream filtered and serialised every device itself), which is kept
here only as the reference. The streams' filters cycle through four kinds: everything, one
tenant, the other tenant, one device. No broker is involved: readings are handed to the hub
as its MQTT callback would.

    .venv/bin/python -m benchmarks.serve_fanout --devices 2000 --streams 1,10,100,400

Prints one line per stream count: the median of `--rounds` ticks for each way, in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable

import orjson

from core.settings import Settings
from devices.topics import telemetry_topic
from serve.live import LiveHub
from serve.live_stream import Event, Stream, StreamFilter
from tests.helpers import COW

FILTERS = (
    StreamFilter(),
    StreamFilter(tenants=frozenset({"t1"})),
    StreamFilter(tenants=frozenset({"t2"})),
    StreamFilter(tenants=frozenset({"t1"}), device_id="cow-3"),
)


def per_stream_tick(hub: LiveHub, streams: list[Stream]) -> None:
    """The fan-out before: every stream filters and serialises every device."""
    newest, hub._newest = hub._newest, {}
    for stream in streams:
        chosen = [
            {k: v for k, v in r.items() if k != "_ts_ns"}
            for (tenant, device_id), r in newest.items()
            if stream.wants.admits(tenant, device_id)
        ]
        if chosen:
            stream.offer(Event("readings", orjson.dumps(chosen)))


def timed(
    devices: int, streams: int, rounds: int, tick: Callable[[LiveHub, list[Stream]], None]
) -> float:
    """The median time of one tick, in ms."""

    async def run() -> float:
        hub = LiveHub(Settings(unregistered="off"))
        now = int(time.time())
        payload = orjson.dumps({**COW, "ts": now})
        topics = [
            telemetry_topic("moclo", f"t{1 + n % 2}", "cow_tracker", f"cow-{n}")
            for n in range(devices)
        ]
        times = []
        with contextlib.ExitStack() as opened:
            held = [
                opened.enter_context(hub.open_stream(FILTERS[n % len(FILTERS)]))
                for n in range(streams)
            ]
            for _ in range(rounds):
                for topic in topics:
                    hub._on_telemetry(topic, payload)
                began = time.perf_counter()
                tick(hub, held)
                times.append(time.perf_counter() - began)
                for stream in held:  # the clients read what they were sent
                    while not stream.queue.empty():
                        stream.queue.get_nowait()
        return statistics.median(times) * 1000

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--streams", default="1,10,100,400", help="comma-separated counts")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(f"{args.devices} devices, median of {args.rounds} ticks")
    print("streams  shared tick (ms)  per-stream tick (ms)")
    for streams in (int(n) for n in args.streams.split(",")):
        shared = timed(args.devices, streams, args.rounds, lambda hub, _: hub.flush_once())
        before = timed(args.devices, streams, args.rounds, per_stream_tick)
        print(f"{streams:>7}  {shared:>16.2f}  {before:>20.2f}")


if __name__ == "__main__":
    main()
