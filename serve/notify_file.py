"""The notify file as `moclo serve` reads it: for who is on call (`GET /api/oncall`) and whom a
one-tap acknowledgement link speaks for (`/ack/{token}`), never for how anyone is reached.

Read again whenever the file changes (its size or modification time), so the panel follows an
edit without a restart. Serve does not hold the channels' secrets: a channel given by `url_env`
is read with a stand-in value here, so the notifier's environment need not be copied into
serve's. (A `url_file` must still be readable, as `notify.file` reads it.) A file with
mistakes is an error that says to run `moclo notify check`; its problems are logged (they
never hold a channel's URL) and never sent to a browser.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

from notify.file import NotifyFileError, load_notify_file
from notify.model import NotifyConfig

log = logging.getLogger("moclo.serve")

# Valid for the notify file's URL check; never used to send anything (serve sends nothing).
_STAND_IN_URL = "json://localhost/"


class NotifyFileUnusable(Exception):
    """The notify file cannot be read or has mistakes; the message says what to run."""


class _AnyVariable(Mapping[str, str]):
    """Every environment variable a channel names, with the stand-in URL."""

    def __getitem__(self, key: str) -> str:
        return _STAND_IN_URL

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class NotifyFileReader:
    """The notify file at `path` (None: no notify file, so nobody is on call)."""

    def __init__(self, path: str | None) -> None:
        self._path = Path(path) if path else None
        self._lock = threading.Lock()  # read on FastAPI's thread pool
        self._seen: tuple[int, int] | None = None
        self._config: NotifyConfig | None = None

    def config(self) -> NotifyConfig | None:
        """The file's people and rotations, None without a file; NotifyFileUnusable if it
        cannot be used. Reads the disk: call it off the event loop."""
        if self._path is None:
            return None
        with self._lock:
            try:
                stat = self._path.stat()
            except OSError as exc:
                raise self._unusable(f"cannot be read ({exc.strerror})") from None
            seen = (stat.st_mtime_ns, stat.st_size)
            if seen != self._seen:  # logged once per version of the file, not per request
                self._seen = seen
                try:
                    self._config = load_notify_file(self._path, environ=_AnyVariable())
                except NotifyFileError as exc:
                    self._config = None
                    log.error("the notify file %s cannot be used:\n%s", self._path, exc)
            if self._config is None:
                raise self._unusable("has mistakes, or cannot be read")
            return self._config

    def _unusable(self, why: str) -> NotifyFileUnusable:
        return NotifyFileUnusable(
            f"the notify file (MOCLO_NOTIFY_FILE) {why}: `moclo notify check {self._path}` "
            "says what to change"
        )
