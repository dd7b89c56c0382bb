"""An alert-state snapshot that is valid JSON of the wrong shape (hand-edited, another
program's, cut short by a disk) must not stop ingest: it is moved aside, kept private for a
look, and the open alerts come back from the store."""

from __future__ import annotations

import stat
from pathlib import Path

import orjson
import pytest

from core.settings import Settings
from ingest.alerts import AlertEngine
from ingest.options import IngestOptions
from tests.conftest import RunningIngest
from tests.helpers import Influx
from tests.test_alerts import cows

GOOD_DEVICE = ["farm", "cow_tracker", "cow-1", 0, 0, 0, {}]
SHAPES = [
    ("null", None),
    ("array", []),
    ("number", 7),
    ("string", "state"),
    ("no-version", {"clocks": []}),
    ("version-is-a-string", {"version": "1", "clocks": {}, "devices": []}),
    ("clocks-is-a-list", {"version": 1, "clocks": [], "devices": []}),
    ("clock-is-a-number", {"version": 1, "clocks": {"farm": 3}, "devices": []}),
    ("devices-is-an-object", {"version": 1, "clocks": {}, "devices": {}}),
    ("device-is-a-string", {"version": 1, "clocks": {}, "devices": ["cow-1"]}),
    (
        "newest-is-a-string",
        {"version": 1, "clocks": {}, "devices": [[*GOOD_DEVICE[:3], "soon", *GOOD_DEVICE[4:]]]},
    ),
    ("rules-is-a-list", {"version": 1, "clocks": {}, "devices": [[*GOOD_DEVICE[:6], []]]}),
    (
        "rule-entry-is-a-number",
        {"version": 1, "clocks": {}, "devices": [[*GOOD_DEVICE[:6], {"fever": 1}]]},
    ),
    (
        "episode-is-a-string",
        {
            "version": 1,
            "clocks": {},
            "devices": [[*GOOD_DEVICE[:6], {"fever": ["x", -1, 0, -1, 0, 0, "open", None]}]],
        },
    ),
]


def open_fever_in_the_store(settings: Settings) -> None:
    """Stores a raised fever alert as ingest would have, before this (re)start."""
    engine = AlertEngine()
    raised = [a for r in cows([39.8, 39.9, 40.0]) for a in engine.evaluate(r)]
    assert [a.state for a in raised] == ["raised"]
    Influx(settings.influx_url, settings.influx_db).write([a.to_line() for a in raised])


@pytest.mark.parametrize("document", [d for _, d in SHAPES], ids=[n for n, _ in SHAPES])
def test_a_snapshot_of_the_wrong_shape_is_set_aside_and_alerts_come_from_the_store(
    settings: Settings, document: object
) -> None:
    open_fever_in_the_store(settings)
    folder = Path(settings.spool_dir) / settings.ingest_id
    folder.mkdir(parents=True)
    bad = orjson.dumps(document)
    (folder / "alert-state.json").write_bytes(bad)
    with RunningIngest(settings, IngestOptions(linger_s=0.05)) as running:
        assert running.stats.open_alerts == 1, "the open fever is restored from the store"
        aside = sorted(folder.glob("alert-state.json.bad-*"))
    assert len(aside) == 1, sorted(p.name for p in folder.iterdir())
    assert aside[0].read_bytes() == bad
    assert stat.S_IMODE(aside[0].stat().st_mode) == 0o600


def test_control_a_good_snapshot_is_used_and_not_set_aside(settings: Settings) -> None:
    open_fever_in_the_store(settings)
    with RunningIngest(settings, IngestOptions(linger_s=0.05)):
        pass  # writes a good snapshot on its way out
    with RunningIngest(settings, IngestOptions(linger_s=0.05)) as running:
        assert running.stats.open_alerts == 1
    folder = Path(settings.spool_dir) / settings.ingest_id
    assert (folder / "alert-state.json").exists()
    assert list(folder.glob("alert-state.json.bad-*")) == []


def test_a_snapshot_that_is_a_folder_is_set_aside_and_ingest_starts(settings: Settings) -> None:
    # A bind mount of a file that did not exist yet leaves a folder in its place (Docker does
    # so): reading it fails with an OSError, which must cost learnt history, not ingest.
    open_fever_in_the_store(settings)
    folder = Path(settings.spool_dir) / settings.ingest_id
    (folder / "alert-state.json").mkdir(parents=True)
    with RunningIngest(settings, IngestOptions(linger_s=0.05)) as running:
        assert running.stats.open_alerts == 1, "the open fever is restored from the store"
    assert len(list(folder.glob("alert-state.json.bad-*"))) == 1
    assert (folder / "alert-state.json").is_file(), "the snapshot is written again on the way out"
