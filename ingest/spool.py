"""The spool: batches of line protocol kept on disk while InfluxDB cannot take them.

Ingest appends a batch here (and fsyncs it) when InfluxDB is unavailable, acknowledges its MQTT
messages, and a drainer writes the spool to InfluxDB, oldest first, once it is back. While the
spool holds anything, new batches queue behind it, so each device's readings reach InfluxDB in
the order they arrived. Memory stays flat however long the outage: only the batch in hand is in
memory. The spool is bounded (`max_bytes`); when full, `append` raises `SpoolFull` and ingest
stops taking messages (the broker keeps them) until there is room.

Layout: numbered segment files of records `<length u32><crc32 u32><created_ns i64><payload>`,
plus a `cursor` file naming the first record not yet written to InfluxDB. After a crash, a torn
record at the end is cut off (it was never acknowledged), and records after the cursor are
written again: InfluxDB overwrites identical points, so that repeats nothing.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from ingest.private import FILE_MODE, create_private, private_folder, tighten

log = logging.getLogger("moclo.ingest.spool")

_HEADER = struct.Struct("<IIq")
_SEGMENT_BYTES = 8 * 1024 * 1024


class SpoolFull(Exception):
    """The spool is at its size limit; stop taking messages until it drains."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    segment: int
    offset: int
    end: int
    created_ns: int
    lines: list[str]


class Spool:
    def __init__(self, directory: Path, *, max_bytes: int = 1024**3) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        private_folder(directory)
        self._segments = sorted(int(p.stem) for p in directory.glob("*.seg"))
        for path in [*map(self._path, self._segments), directory / "cursor"]:
            if path.exists():
                tighten(path, FILE_MODE)  # left readable by an older version
        self._cursor = self._read_cursor()
        self._size = 0
        self._records = 0
        self._head_created_ns: int | None = None
        self._recover()

    # -- state -----------------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def records(self) -> int:
        return self._records

    def is_empty(self) -> bool:
        return self._records == 0

    def oldest_age_s(self, now_ns: int | None = None) -> float:
        """Age of the oldest batch; cheap (no disk access), for /healthz and /metrics."""
        head = self._head_created_ns
        if head is None or self._records == 0:
            return 0.0
        return max(0.0, ((now_ns or time.time_ns()) - head) / 1e9)

    # -- writing ---------------------------------------------------------------------------

    def append(self, lines: list[str]) -> None:
        """Stores a batch durably (fsync) before returning; SpoolFull if there is no room."""
        payload = "\n".join(lines).encode()
        created_ns = time.time_ns()
        record = _HEADER.pack(len(payload), zlib.crc32(payload), created_ns) + payload
        with self._lock:
            if self._size + len(record) > self.max_bytes and self._records:
                raise SpoolFull(
                    f"spool at {self.directory} holds {self._size} bytes; limit {self.max_bytes}"
                )
            segment = self._writable_segment(len(record))
            with self._path(segment).open("ab") as file:
                file.write(record)
                file.flush()
                os.fsync(file.fileno())
            if self._records == 0:
                self._head_created_ns = created_ns
            self._size += len(record)
            self._records += 1

    # -- reading ---------------------------------------------------------------------------

    def peek(self) -> SpoolRecord | None:
        """The oldest record not yet written to InfluxDB."""
        with self._lock:
            while self._records:
                segment, offset = self._cursor
                record = self._read(segment, offset)
                if record is not None:
                    self._head_created_ns = record.created_ns
                    return record
                if not self._segments or segment >= self._segments[-1]:
                    # Counted records that cannot be read: the disk lost them. Say so, and
                    # start counting afresh rather than waiting for them forever.
                    log.error(
                        "spool %s: %d batches counted but unreadable; dropping them",
                        self.directory,
                        self._records,
                    )
                    self._records = 0
                    self._size = 0
                    return None
                # The end of a finished segment (or a corrupt record in it): on to the next.
                self._retire(segment)
            return None

    def pending(self) -> list[SpoolRecord]:
        """Every record not yet written to InfluxDB, oldest first (reading only)."""
        records = []
        with self._lock:
            segment, offset = self._cursor
            for s in self._segments:
                if s < segment:
                    continue
                at = offset if s == segment else 0
                while (record := self._read(s, at)) is not None:
                    records.append(record)
                    at = record.end
        return records

    def pop(self, record: SpoolRecord) -> None:
        """Marks `record` as written to InfluxDB."""
        with self._lock:
            self._cursor = (record.segment, record.end)
            self._size -= record.end - record.offset
            self._records -= 1
            self._head_created_ns = None
            # Not fsynced: losing the newest cursor only means writing some records again,
            # which InfluxDB absorbs (same points).
            self._write_cursor(durable=False)
            if self._records == 0:
                for segment in list(self._segments):
                    self._retire(segment)

    # -- internals -------------------------------------------------------------------------

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:012d}.seg"

    def _writable_segment(self, record_bytes: int) -> int:
        if self._segments:
            last = self._segments[-1]
            if self._path(last).stat().st_size + record_bytes <= _SEGMENT_BYTES:
                return last
        # Never reuse a number the cursor has read into: its offset would point into the
        # new file's records.
        cursor_segment, cursor_offset = self._cursor
        segment = max(
            self._segments[-1] + 1 if self._segments else 0,
            cursor_segment + 1 if cursor_offset else cursor_segment,
        )
        os.close(create_private(self._path(segment)))
        _fsync_directory(self.directory)
        self._segments.append(segment)
        return segment

    def _read(self, segment: int, offset: int) -> SpoolRecord | None:
        try:
            with self._path(segment).open("rb") as file:
                file.seek(offset)
                header = file.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    return None
                length, crc, created_ns = _HEADER.unpack(header)
                payload = file.read(length)
        except FileNotFoundError:
            return None
        if len(payload) < length or zlib.crc32(payload) != crc:
            return None
        end = offset + _HEADER.size + length
        return SpoolRecord(segment, offset, end, created_ns, payload.decode().split("\n"))

    def _retire(self, segment: int) -> None:
        """Deletes a finished segment. The cursor moves past it durably first, so a crash in
        between cannot leave a cursor pointing into a file that is gone."""
        following = [s for s in self._segments if s > segment]
        if self._cursor[0] <= segment:
            self._cursor = (following[0] if following else segment + 1, 0)
            self._write_cursor(durable=True)
        self._path(segment).unlink(missing_ok=True)
        if segment in self._segments:
            self._segments.remove(segment)

    def _read_cursor(self) -> tuple[int, int]:
        try:
            segment, offset = (self.directory / "cursor").read_text().split()
            return int(segment), int(offset)
        except (FileNotFoundError, ValueError):
            return (self._segments[0] if self._segments else 0, 0)

    def _write_cursor(self, *, durable: bool) -> None:
        temporary = self.directory / "cursor.tmp"
        with os.fdopen(create_private(temporary, truncate=True), "w") as file:
            file.write(f"{self._cursor[0]} {self._cursor[1]}\n")
            if durable:
                file.flush()
                os.fsync(file.fileno())
        temporary.replace(self.directory / "cursor")
        if durable:
            _fsync_directory(self.directory)

    def _recover(self) -> None:
        """Drops segments already written, counts what is left after the cursor, and cuts a
        torn record (a crash mid-append: never acknowledged) off the last segment."""
        cursor_segment, cursor_offset = self._cursor
        for segment in [s for s in self._segments if s < cursor_segment]:
            self._path(segment).unlink(missing_ok=True)
            self._segments.remove(segment)
        if cursor_segment not in self._segments and cursor_offset:
            # The cursor's segment was finished and deleted: start at the next one.
            following = [s for s in self._segments if s > cursor_segment]
            self._cursor = (following[0] if following else cursor_segment + 1, 0)
        for segment in self._segments:
            offset = self._cursor[1] if segment == self._cursor[0] else 0
            while (record := self._read(segment, offset)) is not None:
                self._size += record.end - record.offset
                self._records += 1
                if self._head_created_ns is None:
                    self._head_created_ns = record.created_ns
                offset = record.end
            if self._path(segment).stat().st_size > offset:
                if segment == self._segments[-1]:
                    with self._path(segment).open("r+b") as file:
                        file.truncate(offset)
                        os.fsync(file.fileno())
                else:
                    log.error(
                        "spool segment %s is corrupt at byte %d; the rest of it is lost",
                        self._path(segment),
                        offset,
                    )


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
