"""The decoder's two paths side by side, for tests that prove they decide alike."""

from __future__ import annotations

from devices.topics import DeviceAddress
from ingest.decode import Decoded, Decoder, Rejection
from storage.lineprotocol import reading_line


class CarefulDecoder(Decoder):
    """The careful path alone (pydantic, step by step): what the fast path must agree with."""

    def _fast(self, address: DeviceAddress, payload: bytes, received_ns: int, out: Decoded) -> bool:
        return False


Outcome = tuple[list[str], list[int], list[Rejection]]


def outcome(out: Decoded) -> Outcome:
    """What ingest keeps of a decoded message: the stored lines (a fast reading is a msgspec
    Struct, a careful one a pydantic model, so they are compared as InfluxDB stores them), each
    reading's arrival, and every rejection with its reason and words."""
    return [reading_line(r) for r in out.readings], out.received_ns, out.rejections


def both_paths(
    prefix: str, topic: str, payload: bytes, received_ns: int
) -> tuple[Outcome, Outcome]:
    """(the decoder as ingest runs it, the careful path alone) on one message."""
    fast, careful = Decoded(), Decoded()
    Decoder(prefix).decode(topic, payload, received_ns, fast)
    CarefulDecoder(prefix).decode(topic, payload, received_ns, careful)
    return outcome(fast), outcome(careful)
