"""Device credentials files: a CSV file of `tenant,device_id,username,password`, which access
writes (`issued.py`) and reads (`provision.py`), and simulated devices log in with.

Real devices log in as themselves; a simulated fleet does the same with `--connections device
--credentials FILE`. The file is read, never echoed: passwords appear in no log or summary.
"""

from __future__ import annotations

import csv
from pathlib import Path

FIELDS = ("tenant", "device_id", "username", "password")


class CredentialsError(ValueError):
    """A credentials file that cannot be used; the message names the file and the line."""


def load_credentials(path: Path) -> dict[str, tuple[str, str]]:
    """Client id (`tenant.device_id`) → (username, password)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise CredentialsError(f"cannot read credentials file {path}: {exc.strerror}") from None
    rows = csv.DictReader(text.splitlines())
    if rows.fieldnames is None or tuple(rows.fieldnames) != FIELDS:
        raise CredentialsError(f"{path}: the first line must be {','.join(FIELDS)}")
    credentials: dict[str, tuple[str, str]] = {}
    for number, row in enumerate(rows, start=2):
        if any(not row.get(name) for name in FIELDS):
            raise CredentialsError(f"{path}, line {number}: every column needs a value")
        credentials[f"{row['tenant']}.{row['device_id']}"] = (row["username"], row["password"])
    return credentials
