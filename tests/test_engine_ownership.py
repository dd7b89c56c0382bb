"""Who owns a partition, after review (issue 19): a new owner asks whether the worker that held
a partition is alive on a connection of its own, so a full window on pika's thread cannot make
a dead worker look alive (a take-over then waited the whole release wait for it); and a release
or snapshot is written only by the owner the owner file names, so a late one cannot undo a
newer claim. Each with its control. (In a test_engine_* file: it uses the session cluster, and
those files run on one xdist worker.)"""

from __future__ import annotations

import asyncio
import types
import uuid
from pathlib import Path
from typing import Any, cast

import pika

from devices.topics import telemetry_topic
from ingest.engine_source import EngineSource
from ingest.partition_plan import PartitionPlan
from ingest.partition_state import PartitionAlertState
from tests.conftest import Engine
from tests.helpers import wait_until
from tests.test_broker_access import Peer
from tests.test_engine_cluster import V311

NEVER_RAN = "deadbeef"  # an incarnation no process ever had: its liveness queue never existed


def test_a_dead_worker_is_seen_dead_even_while_the_window_is_full(engine: Engine) -> None:
    tenant = f"farm-{uuid.uuid4().hex[:8]}"
    device = engine.registry.add_device(tenant, "cow_tracker", "c1")
    ingest = engine.registry.add_account("ingest", f"ingest-{uuid.uuid4().hex[:8]}")
    node = engine.cluster.nodes[1]
    plan = PartitionPlan(1, 0, 2, (f"moclo.{tenant}.*.*.telemetry",), f"t{uuid.uuid4().hex[:8]}")
    size, count, window = 10_000, 60, 50_000
    parameters = pika.ConnectionParameters(
        "127.0.0.1", node.ports.amqp, "/", pika.PlainCredentials(ingest.username, ingest.password)
    )

    async def run() -> tuple[bool, bool, bool]:
        source = EngineSource([parameters], plan, batch_bytes=size, window_bytes=window)
        await source.start()
        try:
            # Control: room in the window, the gone worker is seen gone.
            with_room = await source.worker_alive(1, NEVER_RAN)
            peer = Peer(node.ports.mqtt, "device", (device.username, device.password),
                        protocol=V311, client_id=device.username)  # fmt: skip
            topic = telemetry_topic(engine.prefix, tenant, "cow_tracker", "c1")
            for _ in range(count):
                assert peer.publish(topic, b"x" * size) == 0
            peer.close()
            await asyncio.to_thread(
                wait_until, lambda: source.pending_bytes >= window, what="the window full"
            )
            when_full = await source.worker_alive(1, NEVER_RAN)  # seen: True after 2.00 s
            # Positive control: a live process (this one, holding its liveness queue) is
            # seen alive all the same while the window is full.
            live = await source.worker_alive(0, source.incarnation)
            return with_room, when_full, live
        finally:
            await source.close()

    with_room, when_full, live = asyncio.run(run())
    assert with_room is False  # control
    assert live is True  # control: the check sees the living, not only the dead
    assert when_full is False, "a worker that never ran was reported alive: the take-over waits"


def _owner_view(directory: Path, worker: int, incarnation: str) -> PartitionAlertState:
    """Only the owner-file half of a worker's partition state (no engine, no pipeline):
    `_mark` and `_unreleased_owner` read and write nothing else (its connection: 0)."""
    state = object.__new__(PartitionAlertState)
    state.directory = directory
    state._writing = None
    plan = types.SimpleNamespace(name="telemetry", worker=worker)
    source = types.SimpleNamespace(plan=plan, incarnation=incarnation, generation=0)
    state.source = cast(Any, source)
    return state


def test_a_late_release_of_a_lost_connection_does_not_cancel_the_new_owners_claim(
    tmp_path: Path,
) -> None:
    """Worker A loses its connection (its broker node killed): worker B, behind it, takes
    partition 0 over at once (A's liveness queue went with the connection) and claims it. A
    reconnects and, at its next sweep, let_go marks its lost partitions released: written over
    B's claim. When B later steps back from partition 0 (A's share, A alive again), A reads
    "released" and restores the partition before B's last batch is judged and stored: the
    ordering hazard the release wait exists to close."""

    async def run() -> tuple[object, object]:
        a, b = _owner_view(tmp_path, 0, "aaaa0000"), _owner_view(tmp_path, 1, "bbbb1111")
        b._mark(0, released=False)  # B's take-over, partition_state.py:185
        await b.written()
        control = await a._unreleased_owner(0)  # A would wait for B here
        a._mark(0, released=True)  # A's late lost-connection let_go, partition_state.py:104
        await a.written()
        return control, await a._unreleased_owner(0)

    control, after = asyncio.run(run())
    assert control == (1, "bbbb1111")  # control: B's claim seen, A waits for B's release
    assert after == (1, "bbbb1111"), after  # seen: None, A does not wait for B


def test_a_paused_workers_stale_snapshot_does_not_replace_the_new_owners(tmp_path: Path) -> None:
    """Worker A, paused while B took partition 0 over, wakes and writes the snapshot it had
    begun: B's snapshot must stay. Controls: A's snapshot and release are written while the
    owner file still names A and that connection."""

    async def run() -> tuple[bytes, object, bytes]:
        a, b = _owner_view(tmp_path, 0, "aaaa0000"), _owner_view(tmp_path, 1, "bbbb1111")
        a._mark(0, released=False)
        a._write(a.snapshot_of(0), b"A, owner", owner=(0, 0))
        a._mark(0, released=True, connection=0)  # A's release, while still the owner
        await a.written()
        written, released = a.snapshot_of(0).read_bytes(), await b._unreleased_owner(0)
        b._mark(0, released=False)  # B takes over (and A is paused meanwhile)
        b._write(b.snapshot_of(0), b"B, owner", owner=(0, 0))
        await b.written()
        a._write(a.snapshot_of(0), b"A, stale", owner=(0, 0))  # A wakes up
        await a.written()
        return written, released, a.snapshot_of(0).read_bytes()

    written, released, after = asyncio.run(run())
    assert written == b"A, owner"  # control: the owner's snapshot is written
    assert released is None  # control: the owner's release is written
    assert after == b"B, owner"  # the stale one is not
