"""What one cow's rule state costs in memory: a fleet of cow trackers judged for a day of reading
time (so their baselines have learnt a day of hours), then the alert engine's allocations, as
tracemalloc counts them, divided by the cows. Run as a script so that the engine measured is
whichever checkout comes first on PYTHONPATH (this one, or a baseline's):

    PYTHONPATH=. .venv/bin/python -P benchmarks/rules_memory.py --cows 3000
    PYTHONPATH=/tmp/rules-base .venv/bin/python -P benchmarks/rules_memory.py --cows 3000

The readings are decoded before tracemalloc starts, and the alert changes are dropped as they
come: what is left traced is the engine (its devices, trackers, condition states, judges) and
the tenant clocks. Prints one JSON line. MOCLO_PURE_PYTHON=1 measures the Python sources.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import sys
import tracemalloc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/rules_memory.py",
        description=__doc__.split("\n\n")[0],
        epilog="example: PYTHONPATH=. .venv/bin/python -P benchmarks/rules_memory.py --cows 3000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cows", type=int, default=3_000, help="cow trackers (144 readings each)")
    args = parser.parse_args(argv)

    from benchmarks.alerts_stack import DAY
    from benchmarks.alerts_throughput import mixed_readings
    from benchmarks.rules import END
    from ingest.alerts import AlertEngine
    from ingest.decode import Decoded, Decoder, Limits

    # One day of readings, every 10 minutes: the fleet makes 10 % more devices than asked.
    n = int(args.cows * DAY / 600 / 1.1)
    messages = mixed_readings(n, seed=1, span_s=DAY, end=END, types=frozenset({"cow_tracker"}))
    decoder, out = Decoder("p", limits=Limits(max_past_s=None)), Decoded()
    for topic, payload in messages:
        decoder.decode(f"p/{topic}", payload, int(END * 1e9), out)
    readings = out.readings
    gc.collect()
    tracemalloc.start()
    engine = AlertEngine(wall_ns=itertools.repeat(int(END * 1e9)).__next__)
    for item in readings:
        engine.evaluate(item)
    gc.collect()
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    cows = len(engine.devices)
    print(json.dumps({"cows": cows, "readings": len(readings), "traced_bytes": traced,
                      "bytes_per_cow": round(traced / cows), "engine": _engine()}))  # fmt: skip
    return 0


def _engine() -> str:
    try:
        from ingest.alerts import compiled
    except ImportError:
        return "Python"
    return "compiled" if compiled.compiled() else "Python"


if __name__ == "__main__":
    sys.exit(main())
