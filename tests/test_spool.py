"""The spool on a real disk: order, bounds, crash recovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import spool as spool_module
from ingest.spool import Spool, SpoolFull


def drain(spool: Spool) -> list[list[str]]:
    out = []
    while (record := spool.peek()) is not None:
        out.append(record.lines)
        spool.pop(record)
    return out


def test_batches_come_out_in_the_order_they_went_in(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    batches = [[f"m v={i}i {j}" for j in range(3)] for i in range(50)]
    for batch in batches:
        spool.append(batch)
    assert spool.records == 50 and spool.size_bytes > 0
    assert drain(spool) == batches
    assert spool.is_empty() and spool.size_bytes == 0
    assert list(tmp_path.glob("*.seg")) == []  # drained segments are deleted


def test_what_was_appended_survives_a_restart_and_what_was_written_is_not_repeated(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path)
    for i in range(5):
        spool.append([f"line {i}"])
    first = spool.peek()
    assert first is not None
    spool.pop(first)
    reopened = Spool(tmp_path)
    assert reopened.records == 4
    assert drain(reopened) == [[f"line {i}"] for i in range(1, 5)]


def test_a_torn_record_from_a_crash_is_cut_off(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(["complete"])
    [segment] = tmp_path.glob("*.seg")
    with segment.open("ab") as file:
        file.write(b"\x40\x00\x00\x00garbage-half-written")
    reopened = Spool(tmp_path)
    assert drain(reopened) == [["complete"]]
    reopened.append(["after"])
    assert drain(Spool(tmp_path)) == [["after"]]


def test_the_spool_is_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1_000)
    spool.append(["x" * 400])
    spool.append(["x" * 400])
    with pytest.raises(SpoolFull):
        spool.append(["x" * 400])
    record = spool.peek()
    assert record is not None
    spool.pop(record)
    spool.append(["x" * 400])  # room again after draining


def test_segments_rotate_and_are_deleted_as_they_drain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "_SEGMENT_BYTES", 200)  # small segments, same code
    spool = Spool(tmp_path)
    for i in range(20):
        spool.append([f"batch {i} " + "y" * 50])
    assert len(list(tmp_path.glob("*.seg"))) > 5
    for _ in range(10):
        record = spool.peek()
        assert record is not None
        spool.pop(record)
    assert [r[0].split()[1] for r in drain(Spool(tmp_path))] == [str(i) for i in range(10, 20)]


def test_a_cursor_left_pointing_into_a_deleted_segment_loses_nothing_new(tmp_path: Path) -> None:
    # The state a crash could leave: the last segment (number 3) was drained and deleted,
    # and the cursor still says "segment 3, byte 38".
    (tmp_path / "cursor").write_text("3 38\n")
    spool = Spool(tmp_path)
    for i in range(3):
        spool.append([f"after {i}"])
    assert spool.peek() is not None
    assert drain(Spool(tmp_path)) == [[f"after {i}"] for i in range(3)]


def test_a_corrupt_record_in_an_older_segment_does_not_stall_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "_SEGMENT_BYTES", 100)
    spool = Spool(tmp_path)
    for i in range(6):
        spool.append([f"batch {i} " + "z" * 40])
    first = sorted(tmp_path.glob("*.seg"))[0]
    data = bytearray(first.read_bytes())
    data[20] ^= 0xFF  # flip a byte inside the first record's payload
    first.write_bytes(bytes(data))
    reopened = Spool(tmp_path)
    survivors = drain(reopened)
    assert survivors and survivors[-1][0].startswith("batch 5")
    assert reopened.is_empty() and reopened.peek() is None


def test_reopening_keeps_the_cursor_offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "_SEGMENT_BYTES", 100)
    spool = Spool(tmp_path)
    for i in range(6):
        spool.append([f"b{i} " + "w" * 40])
    for _ in range(3):
        record = spool.peek()
        assert record is not None
        spool.pop(record)
    assert [r[0].split()[0] for r in drain(Spool(tmp_path))] == ["b3", "b4", "b5"]


def test_the_age_of_the_oldest_batch_needs_no_disk_read(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    assert spool.oldest_age_s() == 0.0
    spool.append(["x"])
    assert spool.oldest_age_s() >= 0.0
    created = spool.peek()
    assert created is not None
    assert spool.oldest_age_s(now_ns=created.created_ns + 5 * 10**9) == 5.0
