"""Pipelined batches: batch k+1 is decoded while batch k is written, yet acknowledgements still
go out only after a batch is stored, in arrival order, and never past a batch that failed."""

from __future__ import annotations

import http.server
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from core.settings import Settings
from devices.catalogue import DEVICE_TYPES
from devices.topics import telemetry_topic
from ingest.options import IngestOptions
from ingest.source import Message
from storage.influx import InfluxRefused
from tests.conftest import RunningIngest
from tests.helpers import Influx, cow_json, publish_all, wait_until

SEQ = re.compile(rb",seq=(\d+)i ")
# How long the proxy holds a write at most for the batch after it to be decoded: in a passing
# run it waits milliseconds; in a failing one (no pipelining) the checks after it fail.
HOLD_S = 5.0


def answer_at_once(batch: list[int]) -> bool:
    return True


@dataclass
class Writes:
    """What the proxy saw, in order: each write's readings, when it began and was stored."""

    fail_at: int | None  # this write (1-based) is answered 401, as an InfluxDB with auth would
    # Whether the write of `batch` may be answered now: the tests say "once the batch after
    # it is decoded", which no fixed delay can promise on a busy machine.
    may_answer: Callable[[list[int]], bool] = answer_at_once
    seqs: list[list[int]] = field(default_factory=list)  # readings in write k-1
    stored_at: list[float] = field(default_factory=list)  # when write k-1 was stored
    stored: set[int] = field(default_factory=set)  # readings InfluxDB has confirmed
    lock: threading.Lock = field(default_factory=threading.Lock)
    decoded: threading.Condition = field(default_factory=threading.Condition)  # notified per batch


class SlowInfluxProxy(http.server.BaseHTTPRequestHandler):
    """A named fake in front of the real InfluxDB: every write is held until `may_answer`
    says so (at most HOLD_S), and write `fail_at` is refused with 401."""

    upstream = ""
    writes = Writes(None)

    def do_GET(self) -> None:
        self._forward(b"")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not self.path.startswith("/write"):
            self._forward(body)
            return
        writes = self.writes
        with writes.lock:
            writes.seqs.append([int(s) for s in SEQ.findall(body)])
            number = len(writes.seqs)
        batch = writes.seqs[number - 1]
        with writes.decoded:
            writes.decoded.wait_for(lambda: writes.may_answer(batch), timeout=HOLD_S)
        if number == writes.fail_at:
            self._answer(401, b'{"error":"authorization failed"}')
            return
        response = self._upstream(body)
        if response.status_code == 204:  # recorded before ingest can hear of it
            with writes.lock:
                writes.stored.update(writes.seqs[number - 1])
                writes.stored_at.append(time.monotonic())
        self._answer(response.status_code, response.content)

    def _forward(self, body: bytes) -> None:
        response = self._upstream(body)
        self._answer(response.status_code, response.content)

    def _upstream(self, body: bytes) -> httpx.Response:
        return httpx.request(
            self.command,
            self.upstream + self.path,
            content=body,
            headers={"Content-Type": self.headers.get("Content-Type", "")},
        )

    def _answer(self, status: int, content: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy(settings: Settings) -> Iterator[str]:
    SlowInfluxProxy.upstream = settings.influx_url
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowInfluxProxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@dataclass
class Observed:
    acked: list[int] = field(default_factory=list)  # seqs, in the order they were acknowledged
    acked_unstored: list[int] = field(default_factory=list)
    prepared: dict[int, float] = field(default_factory=dict)  # first seq of a slice → when


def observe(running: RunningIngest, writes: Writes) -> Observed:
    """Records acknowledgements and decoding as ingest does them (ingest itself unchanged)."""
    assert running.ingest is not None
    ingest, seen = running.ingest, Observed()
    ack, prepare = ingest.source.ack, ingest.pipeline.prepare

    def recording_ack(messages: list[Message]) -> int:
        seqs = [int(m.payload.split(b'"seq":')[1].split(b",")[0]) for m in messages]
        with writes.lock:
            seen.acked_unstored += [s for s in seqs if s not in writes.stored]
        seen.acked += seqs
        return ack(messages)

    def recording_prepare(messages: list[Message]):  # type: ignore[no-untyped-def]
        first = int(messages[0].payload.split(b'"seq":')[1].split(b",")[0])
        seen.prepared[first] = time.monotonic()
        with writes.decoded:
            writes.decoded.notify_all()
        return prepare(messages)

    ingest.source.ack = recording_ack  # type: ignore[method-assign]
    ingest.pipeline.prepare = recording_prepare  # type: ignore[method-assign,assignment]
    return seen


def publish(settings: Settings, count: int) -> list[int]:
    topic = telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", "cow-1")
    publish_all(settings.mqtt_url, [(topic, cow_json(1795327200 + i, i)) for i in range(count)])
    return list(range(count))


# No turn of ingest's loop that waits for the write in flight (by design: the silence sweep,
# the alert-state snapshot and the downlink's once-a-second look for expired commands, which
# a share group member has not): so every batch can be decoded while the one before is written.
OPTIONS = IngestOptions(
    batch_messages=10, window=20, linger_s=0.005, sweep_every_s=3600, snapshot_every_s=3600
)
LAST = 79  # the last reading `publish(settings, 80)` sends


def pipelined(settings: Settings, proxy: str) -> Settings:
    """Ingest writing through the proxy, as a share group member (no downlink, see OPTIONS)."""
    return settings.model_copy(
        update={"influx_url": proxy, "ingest_share_group": f"g{settings.ingest_id[-6:]}"}
    )


def next_batch_decoded(seen: Observed) -> Callable[[list[int]], bool]:
    """A write may be answered once ingest has decoded a batch after it (or none will come)."""

    def may_answer(batch: list[int]) -> bool:
        return not batch or max(batch) >= LAST or max(seen.prepared, default=-1) > max(batch)

    return may_answer


def test_batches_are_acknowledged_in_order_and_only_once_stored(
    settings: Settings, proxy: str
) -> None:
    writes = SlowInfluxProxy.writes = Writes(fail_at=None)
    with RunningIngest(pipelined(settings, proxy), OPTIONS) as running:
        seen = observe(running, writes)
        writes.may_answer = next_batch_decoded(seen)
        sent = publish(settings, 80)
        wait_until(  # without pipelining, each write is held HOLD_S: the check below says so
            lambda: len(seen.acked) >= len(sent), timeout_s=60, what="every message acknowledged"
        )
    assert seen.acked == sent  # in arrival order, each once
    assert seen.acked_unstored == []  # never before InfluxDB had confirmed its write
    assert Influx(settings.influx_url, settings.influx_db).count("cow_tracker", "seq") == 80
    # The point of it: each batch was decoded while the batch before was being written (one
    # after another, it would be decoded only once the one before was stored).
    overlapped = [
        seen.prepared[after[0]] < stored
        for after, stored in zip(writes.seqs[1:], writes.stored_at, strict=False)
    ]
    assert overlapped and all(overlapped), overlapped


def test_a_failed_write_stops_acknowledgements_at_the_batch_before(
    settings: Settings, proxy: str
) -> None:
    writes = SlowInfluxProxy.writes = Writes(fail_at=3)
    running = RunningIngest(pipelined(settings, proxy), OPTIONS)
    with pytest.raises(ExceptionGroup) as stopped, running:
        seen = observe(running, writes)
        writes.may_answer = next_batch_decoded(seen)
        publish(settings, 80)
        wait_until(lambda: running.error is not None, what="ingest to stop on the refusal")
    assert stopped.group_contains(InfluxRefused, match="401")
    first_two = writes.seqs[0] + writes.seqs[1]
    assert seen.acked == first_two  # batches 1 and 2, in order; nothing of batch 3 ...
    assert seen.acked_unstored == []
    # ... nor of what came after it, although it had been decoded meanwhile.
    assert max(seen.prepared) > max(writes.seqs[2]), seen.prepared
    assert not set(seen.acked) & {s for batch in writes.seqs[2:] for s in batch}


def test_the_look_for_expired_commands_does_not_wait_for_the_write_in_flight(
    settings: Settings, proxy: str
) -> None:
    """With the downlink (not a share group member), ingest looks for expired commands once a
    second; that look is judged at once and stored after the write in flight, so it neither
    holds decoding back nor lets anything be acknowledged before it is stored."""
    writes = SlowInfluxProxy.writes = Writes(fail_at=None)
    options = IngestOptions(
        batch_messages=10, window=20, linger_s=0.005, sweep_every_s=0.1, snapshot_every_s=3600
    )
    with RunningIngest(settings.model_copy(update={"influx_url": proxy}), options) as running:
        seen = observe(running, writes)
        writes.may_answer = next_batch_decoded(seen)
        assert running.ingest is not None and running.ingest.downlink is not None
        consumer = running.ingest.consumer
        expire = consumer._expire
        looks_while_held: list[bool] = []  # per look: was the write holding seq 39 unstored?

        def recording_expire(downlink):  # type: ignore[no-untyped-def]
            with writes.lock:
                held = any(39 in batch for batch in writes.seqs) and 39 not in writes.stored
            looks_while_held.append(held)
            return expire(downlink)

        consumer._expire = recording_expire  # type: ignore[method-assign]
        topic = telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", "cow-1")
        readings = [(topic, cow_json(1795327200 + i, i)) for i in range(80)]
        publish_all(settings.mqtt_url, readings[:40])
        # The write holding seq 39 is held until a later batch is decoded, which comes only
        # after this: a look that waited for it would come only once HOLD_S had passed.
        wait_until(lambda: any(looks_while_held), timeout_s=30, what="a look while a write is held")
        publish_all(settings.mqtt_url, readings[40:])
        wait_until(lambda: len(seen.acked) >= 80, timeout_s=60, what="every message acknowledged")
    assert seen.acked == list(range(80))
    assert seen.acked_unstored == []
    assert Influx(settings.influx_url, settings.influx_db).count("cow_tracker", "seq") == 80


SILENT_RULES = """
[[rule]]
device_type = "thermostat"
tenant = "home"
device = "th-9"
name = "silent"
at_least = "1s"
"""
COW_SEQ = 777_777  # the reading whose write is held, then refused


def test_a_silence_judged_behind_a_refused_write_is_raised_again_after_a_restart(
    settings: Settings, proxy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of batch4: the sweep is judged at once and stored after the batch in flight. If
    that batch's write is refused, the silence judged meanwhile must be neither announced nor
    stored by this run (it would follow a batch that was not stored), and must not be lost
    either: after a restart it is raised, stored and announced."""
    monkeypatch.setattr(sys.modules[__name__], "HOLD_S", 60.0)  # held until the sweep judged
    rules = tmp_path / "rules.toml"
    rules.write_text(SILENT_RULES)
    settings = settings.model_copy(update={"rules_file": str(rules)})
    influx = Influx(settings.influx_url, settings.influx_db)
    room = telemetry_topic(settings.topic_prefix, "home", "thermostat", "th-9")
    cow = telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", "cow-1")
    now = int(time.time())
    example = DEVICE_TYPES["thermostat"].example
    times = [now - 10, now - 9, now - 8, now - 7, now - 4, now - 3, now - 2, now - 1, now]
    readings = [orjson.dumps({**example, "ts": t, "seq": i, "heating": False})
                for i, t in enumerate(times)]  # fmt: skip
    writes = SlowInfluxProxy.writes = Writes(fail_at=None)
    judged: list[str] = []  # the silences the sweep judged, as it judged them

    def may_answer(batch: list[int]) -> bool:
        if COW_SEQ not in batch:
            return True
        if judged:  # refuse it, now that a silence was judged behind it
            writes.fail_at = next(n for n, b in enumerate(writes.seqs, 1) if b is batch)
        return bool(judged)

    writes.may_answer = may_answer
    with RunningIngest(settings, OPTIONS_SWEEP):  # stopped cleanly: its snapshot knows the room
        publish_all(settings.mqtt_url, [(room, r) for r in readings])
        wait_until(lambda: influx.count("thermostat", "seq") == len(times), what="the room")
    running = RunningIngest(settings.model_copy(update={"influx_url": proxy}), OPTIONS_SWEEP)
    with pytest.raises(ExceptionGroup) as stopped, running:
        assert running.ingest is not None
        pipeline = running.ingest.pipeline
        sweep = pipeline.sweep

        def recording_sweep():  # type: ignore[no-untyped-def]
            swept = sweep()
            judged.extend(f"{a.rule} {a.state}" for a in swept.alerts)
            with writes.decoded:
                writes.decoded.notify_all()
            return swept

        pipeline.sweep = recording_sweep  # type: ignore[method-assign]
        # Before the first sweep (5 s after the start), which finds the room silent.
        publish_all(settings.mqtt_url, [(cow, cow_json(now, COW_SEQ))])
        wait_until(lambda: running.error is not None, timeout_s=60, what="the refusal")
    assert stopped.group_contains(InfluxRefused, match="401")
    assert judged == ["silent raised"]  # the sweep did judge it behind the held write
    assert running.alerts == []  # not announced after a batch that was not stored ...
    assert not influx.query('SELECT * FROM "moclo_alerts"')  # ... nor stored

    with RunningIngest(settings, OPTIONS_SWEEP) as again:  # straight to InfluxDB now
        wait_until(lambda: influx.count("cow_tracker", "seq") == 1, what="the cow again")
        wait_until(lambda: again.alerts, timeout_s=30, what="the silence raised again")
        wait_until(lambda: influx.query('SELECT * FROM "moclo_alerts"'), what="the silence stored")
    stored = influx.query('SELECT * FROM "moclo_alerts"')
    assert [(r["rule"], r["state"]) for r in stored] == [("silent", "raised")]


OPTIONS_SWEEP = IngestOptions(linger_s=0.005, sweep_every_s=0.2, snapshot_every_s=3600)
