"""Partitions handed over while readings flow (docs/scale.md, "How the work is shared"): a
worker joining takes its share from the worker in front, which steps back. The hand-over must
wait for the last batch the one stepping back judged: a new owner that restored the partition
without it would judge the device's next readings without that batch's alert change and raise
the same fever a second time (a second alert id for one episode)."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devices.topics import telemetry_topic
from moclo.stack import InfluxServer
from tests.conftest import Engine
from tests.helpers import cow_json, wait_until
from tests.test_broker_access import Peer
from tests.test_engine_cluster import V311
from tests.test_engine_ingest import COW, HOT, NORMAL, AlertWatch, Fleet

# Per device and episode: 2 normal, 4 hot (raised at the third), 4 normal (resolved at the third).
EPISODE = [NORMAL] * 2 + [HOT] * 4 + [NORMAL] * 4
JOINS = 3
RESTARTS = 3


class Flow:
    """Every device publishing episode after episode on a thread of its own, at its node,
    until `stop()`; always whole episodes, so that each one raises and resolves once."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.episodes = 0
        self.sent = 0
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flow")
        self._thread.start()

    def _run(self) -> None:
        fleet, nodes = self.fleet, self.fleet.engine.cluster.nodes
        peers = [
            Peer(nodes[n % len(nodes)].ports.mqtt, d.username, (d.username, d.password),
                 protocol=V311, client_id=d.username)
            for n, d in enumerate(fleet.devices)
        ]  # fmt: skip
        t0 = int(time.time()) - 6 * 3600
        i = 0
        try:
            while not self._stop.is_set():
                for temperature in EPISODE:
                    for n, peer in enumerate(peers):
                        topic = telemetry_topic(fleet.engine.prefix, fleet.tenant, COW, f"cow-{n}")
                        payload = cow_json(t0 + 10 * i, i + 1, body_temp_c=temperature)
                        assert peer.publish(topic, payload) == 0, f"cow-{n} reading {i} refused"
                        self.sent += 1
                    i += 1
                self.episodes += 1
        except BaseException as exc:  # said by stop(), in the test's thread
            self.failure = exc
        finally:
            for peer in peers:
                peer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)
        if self.failure is not None:
            raise self.failure


@pytest.fixture
def two_workers(engine: Engine, influxdb: InfluxServer, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(engine, influxdb, tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop()


def grown(fleet: Fleet, by: int, what: str) -> None:
    """Waits until `by` more readings are stored than now."""
    before = fleet.stored()
    wait_until(lambda: fleet.stored() >= before + by, timeout_s=30, what=what)


def test_a_worker_joining_while_fevers_are_raised_gets_its_partitions_after_the_last_batch(
    two_workers: Fleet,
) -> None:
    fleet = two_workers
    fleet.add_devices(16)
    watch = AlertWatch(fleet.engine, fleet.tenant)
    fleet.start_worker(0, 2)
    flow = Flow(fleet)
    try:
        for join in range(1, JOINS + 1):
            # Readings flowing through worker 0 alone, then worker 1 joins: worker 0 steps
            # back from partitions 1 and 3 mid-flow.
            grown(fleet, 100, "readings flowing through worker 0")
            fleet.start_worker(1, 2)
            wait_until(
                lambda: fleet.log_text(0).count("stepped back from partition") >= 2 * join,  # noqa: B023
                timeout_s=30,
                what=f"worker 0 to step back for worker 1 (join {join})",
            )
            grown(fleet, 100, "readings flowing through both")
            # Worker 1 leaves (SIGTERM) and worker 0, standing by, takes its partitions back.
            fleet.workers[1].send_signal(signal.SIGTERM)
            assert fleet.workers[1].wait(30) == 0, fleet.log_text(1)
    finally:
        flow.stop()
    assert_each_episode_raised_once(fleet, watch, flow)


def assert_each_episode_raised_once(fleet: Fleet, watch: AlertWatch, flow: Flow) -> None:
    """Every reading stored; each episode raised once, under one id, and resolved under it."""
    expected = {f"cow-{n}": flow.episodes for n in range(len(fleet.devices))}
    try:
        wait_until(lambda: fleet.stored() == flow.sent, timeout_s=90, what="every reading stored")
        wait_until(
            lambda: {d: len(ids) for d, ids in watch.resolved_ids().items()} == expected,
            timeout_s=30,
            what="every episode resolved",
        )
    finally:
        watch.peer.close()
    assert fleet.stored() == flow.sent
    raised, resolved = watch.raised_ids(), watch.resolved_ids()
    assert {d: len(ids) for d, ids in raised.items()} == expected, {
        d: sorted(ids - resolved.get(d, set())) for d, ids in raised.items()
    }
    assert raised == resolved


def test_a_worker_restarted_before_the_other_saw_it_gone_gets_its_share_back(
    two_workers: Fleet,
) -> None:
    """Worker 0 holds worker 1's partitions after worker 1's kill -9, but is frozen (SIGSTOP:
    a long pause, as on a loaded machine) until worker 1 is back: it never saw worker 1 gone.
    It must still step back once it finds itself consuming worker 1's partitions again."""
    fleet = two_workers
    fleet.add_devices(12)
    fleet.start_worker(0, 2)
    fleet.start_worker(1, 2)
    wait_until(
        lambda: fleet.log_text(0).count("stepped back from partition") == 2,
        timeout_s=30,
        what="worker 0 to step back for worker 1",
    )
    flow = Flow(fleet)
    try:
        with logs_on_failure(fleet):  # the hand-overs' causes are in the workers' logs
            busy = busy_partitions(fleet, (1, 3))  # worker 1's share
            for restart in range(1, RESTARTS + 1):
                grown(fleet, 100, "readings flowing through both")
                taken = {n: fleet.taken_over(1).count(n) for n in busy}
                started = fleet.log_text(1).count("consuming partitions")
                os.kill(fleet.workers[0].pid, signal.SIGSTOP)
                try:
                    fleet.workers[1].kill()
                    fleet.workers[1].wait(10)
                    fleet.start_worker(1, 2)  # a new process, a new login
                    wait_until(
                        lambda: fleet.log_text(1).count("consuming partitions") > started,  # noqa: B023
                        timeout_s=60,
                        what=f"worker 1 consuming again (restart {restart})",
                    )
                finally:
                    os.kill(fleet.workers[0].pid, signal.SIGCONT)
                # Worker 0 steps back within a second or two and worker 1 waits for its
                # release, 10 s at most.
                wait_until(
                    lambda: all(fleet.taken_over(1).count(n) > taken[n] for n in taken),  # noqa: B023
                    timeout_s=30,
                    what=f"worker 1 to get partitions {sorted(busy)} back (restart {restart})",
                )
    finally:
        flow.stop()
    wait_until(lambda: fleet.stored() == flow.sent, timeout_s=90, what="every reading stored")
    # A kill -9 loses the counts learnt since the last snapshot (hot readings acknowledged, not
    # delivered again; docs/scale.md): an episode a kill cut into may be raised late or not at
    # all, at most one per device and kill, and a raise announced just before the kill and
    # never stored is then not raised again under its id. What is stored holds: each episode
    # stored as raised is resolved under its id (a second raise of an open episode would
    # leave the first id open).
    raised, resolved = stored_fevers(fleet, "raised"), stored_fevers(fleet, "resolved")
    assert raised == resolved
    assert len(raised) == len(fleet.devices), raised
    assert all(flow.episodes - RESTARTS <= len(ids) <= flow.episodes for ids in raised.values())


@contextlib.contextmanager
def logs_on_failure(fleet: Fleet) -> Iterator[None]:
    """A wait that fails says what the workers said: a hand-over's cause is in their logs."""
    try:
        yield
    except AssertionError as exc:
        logs = "".join(
            f"\n--- worker {i}'s log ---\n{fleet.log_text(i)}" for i in sorted(fleet.workers)
        )
        raise AssertionError(f"{exc}{logs}") from None


def busy_partitions(fleet: Fleet, share: tuple[int, ...]) -> set[int]:
    """The partitions of `share` that carry readings, asked once every device has one stored:
    a partition is taken over (and logged) before its first batch is judged.

    A partition no device hashes to is never taken over, by anyone. With 8 devices over 4
    partitions, partition 1 or 3 was empty in about 1 run of 6, and a wait for worker 1 to take
    both back timed out: the flaky test. With 12, a partition of worker 1's is empty in about
    1 run of 16 (then only the other is waited for) and both in about 1 of 4,000 (said, not
    passed)."""
    wait_until(
        lambda: devices_stored(fleet) == len(fleet.devices),
        timeout_s=30,
        what="a reading of every device stored",
    )
    busy = {n for n in share if n in fleet.taken_over(0) + fleet.taken_over(1)}
    assert busy, f"no device hashed to partitions {share}: nothing to hand over"
    return busy


def devices_stored(fleet: Fleet) -> int:
    """How many of the fleet's devices have a reading stored."""
    rows = fleet.influx.query(
        f'SELECT count("seq") FROM "{COW}" WHERE "tenant" = \'{fleet.tenant}\' GROUP BY "device_id"'
    )
    return sum(1 for row in rows if row["count"])


def stored_fevers(fleet: Fleet, state: str) -> dict[str, set[str]]:
    """Per device, the ids of the fever alerts stored in `state`."""
    rows = fleet.influx.query(
        'SELECT "alert_id", "state", "device_id" FROM "moclo_alerts" '
        f"WHERE \"tenant\" = '{fleet.tenant}' AND \"rule\" = 'fever'"
    )
    ids: dict[str, set[str]] = collections.defaultdict(set)
    for row in rows:
        if row["state"] == state:
            ids[str(row["device_id"])].add(str(row["alert_id"]))
    return ids
