"""Ingest's own files, private to the account it runs as: the spool holds every tenant's raw
readings (pacemaker data included) and the alert state says who is sick. Folders are 0700 and
files 0600 whatever the umask, like the registry (access/store.py)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("moclo.ingest")

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_folder(path: Path) -> None:
    """Makes `path` and any missing parents 0700. An existing `path` that others may read (made
    by an older moclo under umask 022) is tightened if it is ours, else a warning says what to
    do; existing parents are left alone, as they may be shared and `path` itself guards what is
    inside."""
    missing: list[Path] = []
    folder = path
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, FOLDER_MODE)
        except FileExistsError:
            pass  # made meanwhile by another process; checked below like any existing one
        else:
            os.chmod(folder, FOLDER_MODE)  # mkdir's mode is cut by the umask; make it exact
    tighten(path, FOLDER_MODE)


def tighten(path: Path, private_mode: int) -> None:
    """Removes group and other access from an existing `path` of ours; warns if not ours."""
    info = path.stat()
    if not stat.S_IMODE(info.st_mode) & 0o077:
        return
    if info.st_uid != os.geteuid():
        log.warning(
            "%s may be read by other accounts (mode %o) and is not ours to change: "
            "`chmod %o %s` as its owner",
            path,
            stat.S_IMODE(info.st_mode),
            private_mode,
            path,
        )
        return
    os.chmod(path, private_mode)
    log.info("%s was readable by other accounts; now mode %o", path, private_mode)


def create_private(path: Path, *, truncate: bool = False) -> int:
    """Opens `path` for writing as a 0600 file (created if missing) and returns its descriptor."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else os.O_APPEND)
    descriptor = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(descriptor, FILE_MODE)  # os.open's mode is cut by the umask, and an old file
    except BaseException:  # keeps whatever mode it had: set it exactly
        os.close(descriptor)
        raise
    return descriptor
