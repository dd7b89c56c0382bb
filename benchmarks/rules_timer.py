"""The timed part of `python -m benchmarks.rules`, run as a script so that the alert engine it
times is whichever checkout comes first on PYTHONPATH (this one, or a baseline's):

    PYTHONPATH=DIR python -P benchmarks/rules_timer.py DATA.pickle ROUNDS

DATA is a pickle of (messages, learn_until_ns, wall_ns): messages as (topic, payload) in time
order. Every message is decoded first (not timed). Each round then judges, on a fresh engine with
the default rules, the readings up to `learn_until_ns` (not timed: the baselines learn a day)
and times `evaluate` over the rest. Prints one JSON line: the seconds of each round, the
readings timed, and the SHA-256 of every alert change of the first round as stored lines
(`moclo_alerts`), so two engines can be proved to give byte-identical changes.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import pickle
import sys
import time
from pathlib import Path


def main(data_path: str, rounds: int) -> None:
    from ingest.alerts import AlertEngine
    from ingest.decode import Decoded, Decoder, Limits

    messages, learn_until_ns, wall_ns = pickle.loads(Path(data_path).read_bytes())
    decoder = Decoder("p", limits=Limits(max_past_s=None))
    out = Decoded()
    for topic, payload in messages:
        decoder.decode(f"p/{topic}", payload, wall_ns, out)
    if out.rejections:
        raise SystemExit(f"{len(out.rejections)} readings rejected: {out.rejections[0]}")
    readings = out.readings
    split = next((i for i, r in enumerate(readings) if r.reading.ts >= learn_until_ns), 0)
    learn, timed = readings[:split], readings[split:]
    seconds: list[float] = []
    digest = ""
    for r in range(rounds):
        # The wall clock stands still at the stream's end; a C callable, as ingest's
        # time.time_ns is (a lambda would add a Python call per reading that ingest does not pay).
        engine = AlertEngine(wall_ns=itertools.repeat(wall_ns).__next__)
        changes = [change for item in learn for change in engine.evaluate(item)]
        evaluate = engine.evaluate
        gc.collect()
        began = time.process_time()  # CPU time: the machine may be shared
        for item in timed:
            changes += evaluate(item)
        seconds.append(time.process_time() - began)
        if r == 0:
            lines = b"".join(c.to_line().encode() + b"\n" for c in changes)
            digest = hashlib.sha256(lines).hexdigest()
            alerts = len(changes)
    print(json.dumps({"seconds": seconds, "readings": len(timed), "learnt": len(learn),
                      "digest": digest, "changes": alerts, "engine": _engine()}))  # fmt: skip


def _engine() -> str:
    """Which engine was timed: a checkout before `ingest/alerts/compiled.py` has only Python."""
    try:
        from ingest.alerts import compiled
    except ImportError:
        return "Python"
    return "compiled" if compiled.compiled() else "Python"


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
