"""Coverage-guided fuzzing of decode/validate with atheris (pip install 'moclo[fuzz]').

    .venv/bin/python benchmarks/fuzz_decode.py -runs=300000

The property is the decoder's promise: any topic and payload end as readings or rejections
with a reason, and never as an exception. The hypothesis tests in tests/test_decode.py check the
same property in every test run; this explores further, guided by coverage.
"""

from __future__ import annotations

import sys
import time

import atheris

with atheris.instrument_imports():
    from ingest.decode import REJECTED_PAYLOAD_KEEP_BYTES, Decoded, Decoder, RejectReason

DECODER = Decoder("moclo")
TOPICS = [
    "moclo/farm/cow_tracker/cow-1/telemetry",
    "moclo/home-7/thermostat/th-1/telemetry",
    "moclo/farm/toaster/t-1/telemetry",
]
NOW_NS = int(time.time()) * 10**9


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    choice = provider.ConsumeIntInRange(0, len(TOPICS))
    topic = TOPICS[choice] if choice < len(TOPICS) else provider.ConsumeUnicodeNoSurrogates(60)
    payload = provider.ConsumeBytes(provider.remaining_bytes())
    out = Decoded()
    DECODER.decode(topic, payload, NOW_NS, out)
    if not (out.readings or out.rejections):
        raise AssertionError("a message vanished: no reading and no rejection")
    for rejection in out.rejections:
        if not isinstance(rejection.reason, RejectReason) or not rejection.error:
            raise AssertionError(f"rejection without a reason: {rejection}")
        if len(rejection.payload) > REJECTED_PAYLOAD_KEEP_BYTES:
            raise AssertionError("kept more of a rejected payload than promised")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
