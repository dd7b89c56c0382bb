"""Files holding every tenant's raw readings (the spool) and the alert state are the service's
own: created 0600 in folders of 0700 whatever the umask, and an older, looser folder is
tightened on start."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from ingest.alerts import snapshot
from ingest.options import IngestOptions
from ingest.spool import Spool
from tests.conftest import RunningIngest


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which a plain open() makes files 0644 and folders 0755."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_control_the_umask_really_makes_world_readable_files(
    tmp_path: Path, umask_022: None
) -> None:
    # Without this, a 0600 below could come from the test's environment, not from the code.
    (tmp_path / "plain").write_text("x")
    (tmp_path / "folder").mkdir()
    assert (mode(tmp_path / "plain"), mode(tmp_path / "folder")) == (0o644, 0o755)


def test_spool_segments_cursor_and_folders_are_private(tmp_path: Path, umask_022: None) -> None:
    top = tmp_path / "spool"
    spool = Spool(top / "ingest-1")
    spool.append(["cow_tracker,tenant=t,device_id=d activity=1i 1"])
    spool.append(["cow_tracker,tenant=t,device_id=d activity=2i 2"])
    record = spool.peek()
    assert record is not None
    spool.pop(record)  # writes the cursor
    assert mode(top) == mode(top / "ingest-1") == 0o700
    files = sorted((top / "ingest-1").iterdir())
    assert [p.name for p in files] == ["000000000000.seg", "cursor"]
    assert {p.name: mode(p) for p in files} == {"000000000000.seg": 0o600, "cursor": 0o600}


def test_the_snapshot_is_written_private(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "state" / "alert-state.json"
    snapshot.write(path, b"{}")
    assert (mode(path.parent), mode(path)) == (0o700, 0o600)
    snapshot.write(path, b"{}")  # replacing it keeps it private
    assert mode(path) == 0o600


def test_a_folder_left_open_by_an_older_version_is_tightened(
    tmp_path: Path, umask_022: None
) -> None:
    folder = tmp_path / "ingest-1"
    folder.mkdir()
    old = folder / "000000000000.seg"
    old.write_bytes(b"")
    assert (mode(folder), mode(old)) == (0o755, 0o644)
    Spool(folder)
    assert (mode(folder), mode(old)) == (0o700, 0o600)


def test_real_ingest_keeps_its_spool_folder_and_alert_state_private(
    settings: Settings, umask_022: None
) -> None:
    top = Path(settings.spool_dir)
    assert not top.exists()
    with RunningIngest(settings, IngestOptions(linger_s=0.05)) as running:
        assert running.ingest is not None
        state = running.ingest.snapshot_path
    assert state.exists(), "ingest writes its alert state when it stops"
    assert (mode(top), mode(state.parent), mode(state)) == (0o700, 0o700, 0o600)
