"""`moclo rules list` and `moclo rules check`: which alert rules apply where, and whether a rules
file is good before ingest is started with it. Argument parsing is in `moclo/rules_args.py`."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from core.settings import ENVIRONMENT
from devices.catalogue import DEVICE_TYPES
from devices.rules import Rule, describe
from devices.topics import IDENTIFIER_RULE, is_identifier
from ingest.alerts.rulebook import Override, RuleBook
from ingest.alerts.rulekeys import TOML_KEY
from ingest.alerts.rulesfile import RulesFileError, load_rules_file, tally

RULES_FILE_VARIABLE = ENVIRONMENT["rules_file"]
_COLUMNS = {
    "type": "TYPE",
    "name": "NAME",
    "kind": "KIND",
    "severity": "SEVERITY",
    "raised_when": "RAISED WHEN",
    "resolved_when": "RESOLVED WHEN",
    "from": "FROM",
}


def rules_file_from_environment() -> Path | None:
    """The rules file ingest would read (MOCLO_RULES_FILE), or None."""
    value = os.environ.get(RULES_FILE_VARIABLE)
    return Path(value) if value else None


def list_rules(
    *,
    file: Path | None,
    device_type: str | None = None,
    tenant: str | None = None,
    device_id: str | None = None,
    as_json: bool = False,
) -> int:
    """Prints the rules in force at a scope (the defaults, with `file`'s entries on top) as a
    table, or as JSON; returns the exit status (2: bad arguments or a bad file)."""
    problem = _scope_problem(device_type, tenant, device_id)
    if problem:
        print(f"moclo: {problem}", file=sys.stderr)
        return 2
    try:
        book = load_rules_file(file) if file else RuleBook()
    except RulesFileError as exc:
        print(exc, file=sys.stderr)
        return 2
    types = [device_type] if device_type else list(book.catalogue)
    rows = [
        _row(book, name, rule, origin)
        for name in types
        for rule, origin in book.effective(name, tenant, device_id)
    ]
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    print(_table(rows))
    hidden = _narrower(book, types, tenant, device_id)
    if hidden:
        more = "1 more entry applies" if len(hidden) == 1 else f"{len(hidden)} more entries apply"
        flags = "--device" if tenant else "--tenant (and --device)"
        print(
            f"({more} in {book.source} only to particular "
            f"{'devices' if tenant else 'tenants or devices'}: add {flags} to see them)",
            file=sys.stderr,
        )
    return 0


def check_rules(path: Path) -> int:
    """Prints a one-line summary of a good rules file (exit 0), or every problem to stderr
    (exit 2)."""
    try:
        book = load_rules_file(path)
    except RulesFileError as exc:
        print(exc, file=sys.stderr)
        return 2
    count = tally(book)
    parts = [_plural(count.overrides, "override"), f"{count.new} new"]
    if count.disabled:
        parts.append(f"{count.disabled} disabled")
    print(f"{path}: {_plural(len(book.overrides), 'rule')} OK ({', '.join(parts)})")
    return 0


def _scope_problem(device_type: str | None, tenant: str | None, device_id: str | None) -> str:
    if device_type is not None and device_type not in DEVICE_TYPES:
        return f"unknown device type {device_type!r}; known: {', '.join(DEVICE_TYPES)}"
    if device_id is not None and tenant is None:
        return "--device needs --tenant: a device id is only unique within a tenant"
    for flag, value in (("--tenant", tenant), ("--device", device_id)):
        if value is not None and not is_identifier(value):
            return f"{flag} {value!r} must match {IDENTIFIER_RULE}"
    return ""


def _row(book: RuleBook, device_type: str, rule: Rule, origin: Override | None) -> dict[str, Any]:
    raised, resolved = describe(rule)
    return {
        "type": device_type,
        "name": rule.name,
        "kind": rule.kind,
        "severity": rule.severity,
        "raised_when": raised,
        "resolved_when": resolved,
        "from": "default" if origin is None else f"{book.source}:{origin.line}",
        "tenant": None if origin is None else origin.tenant,
        "device": None if origin is None else origin.device_id,
        # As a rules file would write them (durations in seconds), so they can be copied back.
        "settings": {
            TOML_KEY.get(f.name, f.name): getattr(rule, f.name)
            for f in dataclasses.fields(rule)
            if f.name != "name" and getattr(rule, f.name) is not None
        },
    }


def _table(rows: list[dict[str, Any]]) -> str:
    cells = [list(_COLUMNS.values())] + [[str(row[key]) for key in _COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


def _narrower(
    book: RuleBook, types: list[str], tenant: str | None, device_id: str | None
) -> list[Override]:
    """The file's entries for these types that a narrower scope would show."""
    if device_id is not None:
        return []
    return [
        o
        for o in book.overrides
        if o.device_type in types
        and (o.tenant is not None if tenant is None else o.tenant == tenant and o.device_id)
    ]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
