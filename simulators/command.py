"""`moclo simulate` as a person sees it: progress while it runs, a summary at the end."""

from __future__ import annotations

import json
import signal
import sys
import threading

from core.settings import Settings
from simulators.run import SimulationOptions, SimulationResult, run_simulation


def simulate_command(
    settings: Settings, options: SimulationOptions, *, title: str, as_json: bool = False
) -> int:
    """Runs the simulation until its duration is over or Ctrl-C; 0 if the broker took it all."""
    mode = "burst" if options.burst else f"speed {options.speed:g}x"
    print(
        f"simulating {title} (seed {options.seed}, {mode}) → {settings.mqtt.display()}",
        file=sys.stderr,
        flush=True,
    )

    stop, abort = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        # First: stop making readings and send what the devices hold. Second: stop sending.
        (abort if stop.is_set() else stop).set()
        print(
            f"\n{signal.Signals(signum).name}: "
            + ("stopping at once" if abort.is_set() else "stopping (again to stop at once)"),
            file=sys.stderr,
            flush=True,
        )

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    result = run_simulation(
        settings.mqtt, settings.topic_prefix, options, stop=stop, abort=abort, progress=_progress
    )
    _print_summary(result, as_json=as_json)
    return 0 if result.acknowledged else 1


def _progress(result: SimulationResult) -> None:
    """A progress line on stderr, now and then while it runs."""
    rate = result.messages / max(result.elapsed_s, 1e-9)
    faults = sum(result.faults.values())
    print(
        f"  {result.devices} devices on {result.connections} connections: published "
        f"{result.readings} readings in "
        f"{result.messages} messages ({rate:.0f} messages/s)"
        + (f", {faults} faults injected" if faults else ""),
        file=sys.stderr,
        flush=True,
    )


def _print_summary(result: SimulationResult, *, as_json: bool) -> None:
    """What was published, on stdout: a JSON object, or lines for people."""
    if as_json:
        print(
            json.dumps(
                {
                    "devices": result.devices,
                    "connections": result.connections,
                    "seed": result.seed,
                    "messages": result.messages,
                    "readings": result.readings,
                    "readings_by_type": result.by_type,
                    "seconds": round(result.elapsed_s, 3),
                    "acknowledged": result.acknowledged,
                    "produced": result.produced,
                    "faults": result.faults,
                    "offline_skipped": result.offline_skipped,
                }
            )
        )
    else:
        status = (
            "all acknowledged by the broker"
            if result.acknowledged
            else "NOT all acknowledged by the broker"
        )
        by_type = ", ".join(f"{n} {t}" for t, n in sorted(result.by_type.items()))
        print(
            f"published {result.readings} readings in {result.messages} messages from "
            f"{result.devices} devices in {result.elapsed_s:.1f}s; {status}",
            flush=True,
        )
        if by_type:
            print(f"  by type: {by_type}", flush=True)
        if result.faults:
            faults = ", ".join(f"{n} {name}" for name, n in sorted(result.faults.items()))
            print(f"  faults injected: {faults}", flush=True)
        if result.offline_skipped:
            print(
                f"  not made while offline (scripted): {result.offline_skipped} readings",
                flush=True,
            )
