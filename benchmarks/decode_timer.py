"""The timed part of `python -m benchmarks.decode`, run as a script so that the decoder it
times is whichever checkout comes first on PYTHONPATH (this one, or a baseline's):

    PYTHONPATH=DIR python -P benchmarks/decode_timer.py DATA.pickle ROUNDS

DATA is a pickle of (messages, wall_ns): messages as (topic, payload). Each round decodes every
message with a fresh decoder (CPU time, the topics' first sight included, as in ingest) and
formats each reading's line as the checkout's pipeline does. Prints one JSON line: the seconds
of each round (decoding alone, and decoding plus line formatting), the readings, and the
SHA-256 of the stored lines and rejections of the first round, so two decoders can be proved
to keep the same.
"""

from __future__ import annotations

import gc
import hashlib
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any


def lines_of(readings: list[Any]) -> list[str]:
    """The readings' lines as the checkout's pipeline makes them: where it formats a message's
    measurement and tags once for its run of readings (`reading_head`), so; else one by one."""
    try:
        from storage.lineprotocol import reading_formatter, reading_head
    except ImportError:  # an older checkout
        from storage.lineprotocol import reading_line

        return [reading_line(item) for item in readings]
    lines, address, head = [], None, ""
    for item in readings:
        if item.address is not address:
            address = item.address
            head = reading_head(address)
        lines.append(reading_formatter(type(item.reading))(head, item.reading))
    return lines


def main(data_path: str, rounds: int) -> None:
    from ingest.decode import Decoded, Decoder, Limits

    messages, wall_ns = pickle.loads(Path(data_path).read_bytes())
    decode_s: list[float] = []
    total_s: list[float] = []
    digest, readings = "", 0
    for r in range(rounds):
        decoder, out = Decoder("p", limits=Limits(max_past_s=None)), Decoded()
        decode = decoder.decode
        gc.collect()
        began = time.process_time()  # CPU time: the machine may be shared
        for topic, payload in messages:
            decode(topic, payload, wall_ns, out)
        decoded = time.process_time()
        lines = lines_of(out.readings)
        ended = time.process_time()
        decode_s.append(decoded - began)
        total_s.append(ended - began)
        if r == 0:
            kept = "\n".join(lines) + repr([(x.reason, x.error) for x in out.rejections])
            digest, readings = hashlib.sha256(kept.encode()).hexdigest(), len(out.readings)
    print(json.dumps({"decode": decode_s, "total": total_s, "readings": readings,
                      "digest": digest}))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
