"""Points just beyond the retention: InfluxDB 1.x (and 2.x, which share its points writer)
drops a point older than the retention only when no other point of the same write maps to its
shard group; a point in the same shard group as a fresher one is stored. So what a part of a
batch is refused for depends on its neighbours, and a part sent alone may be refused more
points than it was in the whole batch: the sink must not conclude from those counts that a
part it never sent again holds no refused point. Nor does the count include a line InfluxDB
could not parse in the same write. Against the real InfluxDB 1.6.7."""

from __future__ import annotations

import re
import time
import uuid

import orjson

from core.settings import Settings
from devices.topics import telemetry_topic
from ingest.options import IngestOptions
from moclo.stack import InfluxServer
from tests.conftest import RunningIngest
from tests.helpers import COW, Influx, publish_all, wait_until
from tests.test_partial_writes import DAY_NS, short_retention, write_through

HOUR = 3600


def test_a_point_dropped_beside_one_stored_by_its_shard_group_is_not_lost(
    settings: Settings,
) -> None:
    influx = Influx(settings.influx_url, settings.influx_db)
    with RunningIngest(settings, IngestOptions(linger_s=0.05)) as running:
        service = running.ingest
        assert service is not None and service.retention_s is None  # autogen keeps all
        # The retention is shortened while ingest runs (it reads it again only later): a
        # policy whose oldest kept moment falls about 30 min into a one-hour shard group.
        now = int(time.time())
        minutes = 60 + ((now % HOUR - 1800) % HOUR) // 60
        influx.query(
            f'CREATE RETENTION POLICY "edge" ON "{settings.influx_db}" DURATION {minutes}m '
            "REPLICATION 1 SHARD DURATION 1h DEFAULT"
        )
        oldest = now - 60 * minutes  # InfluxDB keeps points from here on
        group = oldest - oldest % HOUR  # the shard group holding that moment
        assert 1700 <= oldest - group <= 1900
        fresh = oldest + 600  # kept; its shard group is `group`
        covered = oldest - 900  # beyond the retention, but in `group`: stored beside `fresh`
        dropped = group - 1800  # beyond the retention, in an older group: refused
        readings = [
            {**COW, "ts": ts, "seq": seq} for seq, ts in ((1, fresh), (2, covered), (3, dropped))
        ]
        topic = telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", "cow-1")
        publish_all(settings.mqtt_url, [(topic, orjson.dumps(readings))])

        def handled() -> bool:
            return running.stats.batches_written >= 1 and running.stats.rejected >= 1

        wait_until(handled, timeout_s=30, what="the batch written and a rejection recorded")

        # The refused point's rejection goes out right after the write: wait for the
        # outcome of every reading, each stored or rejected.
        def outcomes() -> tuple[set[int], set[int]]:
            stored = {int(r["seq"]) for r in influx.query('SELECT seq FROM "cow_tracker"')}
            # A refused point's rejection keeps its line, `... seq=3i ...`.
            rejected = {
                int(re.search(r"\bseq=(\d+)i", r["payload"]).group(1))  # type: ignore[union-attr]
                for r in influx.query('SELECT payload FROM "moclo_rejected"')
            }
            return stored, rejected

        wait_until(
            lambda: running.stats.rejected == len(outcomes()[1]),
            timeout_s=30,
            what="the rejections stored",
        )
        stored, rejected = outcomes()
        assert 1 in stored and 3 not in stored
        # Nothing acknowledged is lost: the point InfluxDB dropped is recorded as rejected.
        assert 3 in rejected, f"stored {stored}, rejected {rejected}: reading 3 is lost"
        assert running.error is None


def test_a_line_influxdb_cannot_parse_beside_a_point_beyond_the_retention_is_not_lost(
    influxdb: InfluxServer,
) -> None:
    # 1.x answers such a batch "points beyond retention policy dropped=1": the line it could
    # not parse is not in that count, which is one more reason the count is only a bound.
    influx = Influx(influxdb.url, f"masked_{uuid.uuid4().hex[:8]}")
    short_retention(influx, "1h")
    now = time.time_ns()
    lines = ["m,device_id=a v=1i " + str(now), f"m,device_id=b v=2i {now - 3 * DAY_NS}"]
    lines.append(f"m,device_id=c v=3x {now}")  # not line protocol
    refused = write_through(influxdb.url, influx.database, lines)
    assert [index for index, _ in refused] == [1, 2], refused
    assert "beyond retention" in refused[0][1] and "unable to parse" in refused[1][1]
    assert influx.count("m", "v") == 1
