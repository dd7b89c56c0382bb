"""The byte window at its edges (3 MiB since mem4, here scaled down with the same ratios):
a message bigger than the whole window, or than a batch, still flows, as do arrays that fill
the window exactly; nothing stalls and every reading is stored once."""

from __future__ import annotations

from core.settings import Settings
from ingest.decode import Limits
from ingest.options import IngestOptions
from tests.conftest import RunningIngest
from tests.helpers import Influx, cow_json, publish_all, wait_until
from tests.test_operations import NOW, cow


def _array(first: int, count: int) -> bytes:
    return b"[" + b",".join(cow_json(NOW - 3600 + n, n) for n in range(first, first + count)) + b"]"


def test_a_message_bigger_than_the_window_and_arrays_at_its_edge_all_flow(
    settings: Settings, influx: Influx
) -> None:
    batch_bytes, window_bytes = 1024, 3 * 1024
    options = IngestOptions(
        linger_s=0.01,
        batch_bytes=batch_bytes,
        window_bytes=window_bytes,
        limits=Limits(max_payload_bytes=64 * 1024),
    )
    topic = cow("cow-1", 0, settings)[0]
    huge = _array(0, 200)  # about ten windows in one message
    assert len(huge) > 8 * window_bytes
    per_reading = len(_array(0, 10)) // 10
    edge = window_bytes // per_reading  # readings in an array about the window's size
    messages = [(topic, huge)]
    first = 200
    for _ in range(6):
        messages.append((topic, _array(first, edge)))
        first += edge
    messages += [(topic, cow_json(NOW - 3600 + n, n)) for n in range(first, first + 5)]
    with RunningIngest(settings, options) as running:
        publish_all(settings.mqtt_url, messages)
        wait_until(
            lambda: influx.count("cow_tracker", "seq") == first + 5,
            timeout_s=60,
            what="every reading of the big message, the arrays at the edge and the singles",
        )
        assert running.stats.messages == len(messages)
