"""How much one simulator process drives: 10,000 devices in real time, and a burst as fast as
the broker takes it, against a bare paho publisher measured in the same run as the baseline.

    .venv/bin/python -m benchmarks.simulator            # writes benchmarks/results/simulator.md
    .venv/bin/python -m benchmarks.simulator --out -         # prints it

Each mode runs in its own process (so its peak memory is its own) against one Mosquitto
started here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.machine import machine
from core.mqtt import MqttEndpoint
from moclo.stack import MosquittoServer, free_port
from simulators.clock import WallClock
from simulators.publisher import MqttPublisher
from simulators.run import SimulationOptions, run_simulation

PREFIX = "bench"


class LagClock(WallClock):
    """The wall clock, noting how late each reading went out compared to its schedule."""

    def __init__(self) -> None:
        self.lags: list[float] = []

    def wait_until(self, t: float, stop: threading.Event) -> bool:
        ok = super().wait_until(t, stop)
        self.lags.append(max(0.0, time.time() - t))
        return ok


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def baseline(url: str, messages: int, qos: int) -> dict[str, float]:
    """A bare paho publisher sending one prepared payload over and over: the ceiling."""
    payload = (
        b'{"ts": 1795327200.5, "seq": 1, "body_temp_c": 38.61, "activity": 402, '
        b'"rumination_min": 31, "lat": 52.09071, "lon": 5.121402, "battery_pct": 88.1}'
    )
    publisher = MqttPublisher(MqttEndpoint.from_url(url), client_id="bench-base", qos=qos)
    publisher.start()
    began = time.monotonic()
    for i in range(messages):
        publisher.publish(f"{PREFIX}/farm/cow_tracker/cow-{i % 10000:05d}/telemetry", payload)
    assert publisher.flush(timeout_s=300)
    elapsed = time.monotonic() - began
    publisher.close()
    return {
        "messages": messages,
        "seconds": elapsed,
        "per_s": messages / elapsed,
        "peak_rss_mb": _peak_rss_mb(),
    }


def burst(url: str, devices: int, qos: int) -> dict[str, float]:
    """The simulator in simulated time: every device's readings, as fast as possible."""
    options = SimulationOptions(
        devices={"cow_tracker": devices},
        tenant="farm",
        interval_s=60,
        duration_s=600,
        burst=True,
        qos=qos,
        seed=1,
    )
    result = run_simulation(MqttEndpoint.from_url(url), PREFIX, options)
    assert result.acknowledged
    return {
        "messages": result.messages,
        "seconds": result.elapsed_s,
        "per_s": result.messages / result.elapsed_s,
        "peak_rss_mb": _peak_rss_mb(),
    }


def realtime(
    url: str, devices: int, interval_s: float, duration_s: float, per_device: bool = False
) -> dict[str, float]:
    """Every device at its interval on the wall clock: does the publisher keep up?"""
    clock = LagClock()
    options = SimulationOptions(
        devices={"cow_tracker": devices},
        tenant="farm",
        interval_s=interval_s,
        duration_s=duration_s,
        seed=1,
        qos=1,
        per_device_connections=per_device,
    )
    result = run_simulation(MqttEndpoint.from_url(url), PREFIX, options, clock=clock)
    lags = sorted(clock.lags)
    return {
        "messages": result.messages,
        "seconds": result.elapsed_s,
        "per_s": result.messages / result.elapsed_s,
        "peak_rss_mb": _peak_rss_mb(),
        "lag_p50_ms": lags[len(lags) // 2] * 1000,
        "lag_p99_ms": lags[len(lags) * 99 // 100] * 1000,
        "lag_max_ms": lags[-1] * 1000,
    }


def _child(mode: str, url: str, args: argparse.Namespace) -> dict[str, float]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.simulator",
        "--child",
        mode,
        "--url",
        url,
        "--devices",
        str(args.devices),
        "--messages",
        str(args.messages),
        "--interval",
        str(args.interval),
        "--duration",
        str(args.duration),
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=1800)
    result: dict[str, float] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.simulator", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument(
        "--messages", type=int, default=100_000, help="messages for the baseline publisher"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=10.0,
        help="real-time mode: seconds between a device's readings",
    )
    parser.add_argument(
        "--duration", type=float, default=60.0, help="real-time mode: how long to run, seconds"
    )
    parser.add_argument("--out", default="benchmarks/results/simulator.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        runs = {
            "baseline-qos0": lambda: baseline(args.url, args.messages, 0),
            "baseline-qos1": lambda: baseline(args.url, args.messages, 1),
            "burst-qos0": lambda: burst(args.url, args.devices, 0),
            "burst-qos1": lambda: burst(args.url, args.devices, 1),
            "realtime": lambda: realtime(args.url, args.devices, args.interval, args.duration),
            "realtime-per-device": lambda: realtime(
                args.url, args.devices, args.interval, args.duration, per_device=True
            ),
        }
        print(json.dumps(runs[args.child]()))
        return 0

    # One connection per device: the broker (started from here) and the simulator each need a
    # file descriptor per device.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.devices + 1024
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, wanted)), hard))
    with tempfile.TemporaryDirectory(prefix="moclo-bench-") as tmp:
        broker = MosquittoServer(Path(tmp) / "mosquitto", free_port())
        broker.start()
        try:
            results = {}
            for mode in (
                "baseline-qos0",
                "burst-qos0",
                "baseline-qos1",
                "burst-qos1",
                "realtime",
                "realtime-per-device",
            ):
                print(f"running {mode}…", file=sys.stderr, flush=True)
                results[mode] = _child(mode, broker.url, args)
                print(f"  {results[mode]}", file=sys.stderr, flush=True)
        finally:
            broker.stop()

    rt, pd = results["realtime"], results["realtime-per-device"]
    rows = [
        "| mode | messages | messages/s | vs bare paho, same QoS | peak RSS |",
        "|---|---:|---:|---:|---:|",
    ]
    for qos in (0, 1):
        base, sim = results[f"baseline-qos{qos}"], results[f"burst-qos{qos}"]
        rows.append(
            f"| bare paho publisher, QoS {qos} (baseline) | {base['messages']:.0f} | "
            f"{base['per_s']:,.0f} | 1.00 | {base['peak_rss_mb']:.0f} MB |"
        )
        rows.append(
            f"| simulator burst, {args.devices:,} cows, QoS {qos} | "
            f"{sim['messages']:.0f} | {sim['per_s']:,.0f} | "
            f"{sim['per_s'] / base['per_s']:.2f} | {sim['peak_rss_mb']:.0f} MB |"
        )
    command = "python -m benchmarks.simulator " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    text = (
        f"# Simulator throughput\n\n{datetime.date.today().isoformat()}, on {machine()}; "
        f"Mosquitto 2.0.11 on loopback, one connection.\n\nReproduce: `.venv/bin/{command.strip()}`"
        f"\n\n{chr(10).join(rows)}\n\n"
        f"Real time: {args.devices:,} cows, one reading every {args.interval:g} s each "
        f"({args.devices / args.interval:,.0f} readings/s due), for {args.duration:g} s: "
        f"{rt['messages']:.0f} messages at {rt['per_s']:,.0f}/s; lateness against the "
        f"schedule p50 {rt['lag_p50_ms']:.1f} ms, p99 {rt['lag_p99_ms']:.1f} ms, "
        f"max {rt['lag_max_ms']:.1f} ms; peak RSS {rt['peak_rss_mb']:.0f} MB.\n\n"
        f"The same with one connection per device ({args.devices:,} connections on one event "
        f"loop): {pd['messages']:.0f} messages at {pd['per_s']:,.0f}/s; lateness p50 "
        f"{pd['lag_p50_ms']:.1f} ms, p99 {pd['lag_p99_ms']:.1f} ms, max "
        f"{pd['lag_max_ms']:.1f} ms; peak RSS {pd['peak_rss_mb']:.0f} MB.\n"
    )
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
