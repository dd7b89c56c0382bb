"""Where issued secrets go when they are not printed: files only their owner can read.

- devices: the simulator's credentials CSV (`tenant,device_id,username,password`, see
  `access/credentials.py`), appended to, so one file can collect a whole fleet;
- accounts: an environment file (`MOCLO_MQTT_USERNAME=...`, `MOCLO_MQTT_PASSWORD=...`) for a
  service, as docker-compose's `env_file` or systemd's `EnvironmentFile` read it, or a file
  holding only the password (`MOCLO_MQTT_PASSWORD_FILE`).

Files are created 0600; an existing file that others may read is refused rather than used,
since its secrets would be readable the moment they are written.
"""

from __future__ import annotations

import csv
import io
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from access.credentials import FIELDS
from access.registry import Credentials, DeviceRecord


class IssuedFileError(ValueError):
    """A file for credentials that cannot be used; the message says why and what to do."""


def append_device_credentials(
    path: Path, issued: Iterable[tuple[DeviceRecord, Credentials]]
) -> int:
    """Appends one CSV row per device (with the header if the file is new); fsynced before it
    returns. Returns how many rows were written."""
    rows = _credential_rows(issued)
    count = rows.getvalue().count("\n")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        new = True
    except FileExistsError:
        _check_private(path)
        _check_header(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        new = False
    except OSError as exc:
        raise IssuedFileError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "a") as file:
        if new:
            file.write(",".join(FIELDS) + "\n")
        file.write(rows.getvalue())
        file.flush()
        os.fsync(file.fileno())
    return count


def check_env_file(path: Path) -> None:
    """Raises IssuedFileError if `write_account_env` could not use `path`: an existing file
    that others may read, or a folder that does not exist."""
    if path.exists():
        _check_private(path)
    elif not path.parent.is_dir():
        raise IssuedFileError(f"cannot write {path}: there is no folder {path.parent}")


def write_account_env(path: Path, credentials: Credentials) -> None:
    """Writes (or replaces) an environment file with the account's MQTT login, mode 0600."""
    _write_private(
        path,
        f"MOCLO_MQTT_USERNAME={credentials.username}\nMOCLO_MQTT_PASSWORD={credentials.password}\n",
    )


def write_password_file(path: Path, password: str) -> None:
    """Writes (or replaces) a file holding only the password and a newline, mode 0600: what
    MOCLO_MQTT_PASSWORD_FILE names (docker-compose's way of handing a service its secret)."""
    _write_private(path, password + "\n")


def write_device_credentials(path: Path, issued: Iterable[tuple[DeviceRecord, Credentials]]) -> int:
    """Writes (or replaces) a whole credentials CSV, mode 0600. Returns how many rows."""
    rows = _credential_rows(issued)
    _write_private(path, ",".join(FIELDS) + "\n" + rows.getvalue())
    return rows.getvalue().count("\n")


def _credential_rows(issued: Iterable[tuple[DeviceRecord, Credentials]]) -> io.StringIO:
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    for record, credentials in issued:
        writer.writerow(
            (record.tenant, record.device_id, credentials.username, credentials.password)
        )
    return rows


def _write_private(path: Path, text: str) -> None:
    """Replaces `path` atomically with `text`, mode 0600; an existing file others may read is
    refused (IssuedFileError) rather than overwritten in place."""
    if path.exists():
        _check_private(path)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise IssuedFileError(f"cannot write {path}: {exc.strerror}") from None


def _check_private(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise IssuedFileError(f"cannot use {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise IssuedFileError(
            f"{path} may be read by others (mode {mode:04o}), and it holds secrets: "
            f"`chmod 600 {path}` first, or name a new file"
        )


def _check_header(path: Path) -> None:
    try:
        with path.open(newline="") as file:
            first = file.readline().strip()
    except OSError as exc:
        raise IssuedFileError(f"cannot read {path}: {exc.strerror}") from None
    if first != ",".join(FIELDS):
        raise IssuedFileError(
            f"{path} is not a credentials file (its first line must be {','.join(FIELDS)}); "
            "name a new file"
        )
