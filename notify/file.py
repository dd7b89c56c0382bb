"""The notify file (TOML, `MOCLO_NOTIFY_FILE`): who is told what, checked as it is read.

    [[people]]
    name = "dr-jansen"                       # required: lowercase, digits, - and _
    tenants = ["cardiology"]                 # required: whose alerts they may be told about
    time_zone = "Europe/Amsterdam"           # for quiet hours (default UTC)
    account = "jansen"                       # who acknowledges as them (default: name)
    channels = [                             # required: one or more Apprise URLs
      { url_file = "/run/secrets/jansen-ntfy", label = "jansen phone" },
      { url_env = "JANSEN_MAIL_URL" },       # or url = "…" inline
    ]
    quiet_hours = [ { from = "22:00", to = "07:00", breakthrough = "critical" } ]

    [[rotations]]                            # on-call: see notify/oncall.py
    [[routes]]                               # who is told about what: see notify/file_routes.py

Channel URLs are secrets (they hold tokens and passwords): no message, log or repr shows one,
nor where it was read from; only its label, else its scheme (and host where that names a
server), as `Channel.shown`.

Every problem is reported at once, one a line, as `FILE:LINE: person NAME: what is wrong, what
to write`; a file with any problem is refused as a whole (the notifier keeps the last good one).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from core.toml_lines import TomlLines, error_line
from devices.topics import IDENTIFIER, IDENTIFIER_RULE
from notify.file_entry import Entry, Problems, clock, did_you_mean
from notify.file_routes import Known, read_rotation, read_route
from notify.model import Channel, NotifyConfig, Person, QuietHours

TABLES = ("people", "rotations", "routes")
PERSON_KEYS = ("name", "tenants", "time_zone", "account", "channels", "quiet_hours")
CHANNEL_KEYS = ("url", "url_file", "url_env", "label")
QUIET_KEYS = ("from", "to", "breakthrough")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
MAX_LABEL = 64
_PLURAL = {"person": "people", "rotation": "rotations", "route": "routes"}  # a common slip


class _Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=_Named)


class NotifyFileError(ValueError):
    """A notify file that cannot be used: every problem, one a line, as `FILE:LINE: what is
    wrong, what to write` (also in `problems`). Never holds a channel's URL."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class _AnyVariable(Mapping[str, str]):
    """Every environment variable a channel names, holding a stand-in URL (never sent to)."""

    def __getitem__(self, key: str) -> str:
        return "json://localhost/"

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


# For readers of names only (who is on call, whom a link speaks for: `moclo oncall show`,
# serve): they send nothing, so they need not hold the notifier's channel secrets. Given as
# `environ`, neither a `url_env` nor a `url_file` is read: the secret stays where it is.
NAMES_ONLY: Mapping[str, str] = _AnyVariable()


def load_notify_file(path: Path, *, environ: Mapping[str, str] = os.environ) -> NotifyConfig:
    """The notify file at `path`; NotifyFileError lists everything wrong with it."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from Windows editors is fine
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise NotifyFileError([f"{path}: cannot read the notify file: {why}"]) from None
    return parse_notify(text, str(path), environ=environ)


def parse_notify(
    text: str, source: str, *, environ: Mapping[str, str] = os.environ
) -> NotifyConfig:
    """The notify file in `text`; `source` names it in messages; `url_env` channels are read
    from `environ`. NotifyFileError lists everything wrong."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = error_line(exc, text)
        raise NotifyFileError([f"{source}:{line}: not valid TOML: {exc}"]) from None
    problems = Problems(source)
    tables = _tables(document, text, problems)
    people = _unique(
        [p for e in tables["people"] if (p := _person(e, environ))], tables["people"], problems
    )
    known = Known(people, refused_people=_refused(tables["people"], people))
    rotations = _unique(
        [r for e in tables["rotations"] if (r := read_rotation(e, known))],
        tables["rotations"],
        problems,
    )
    known = replace(known, rotations=rotations)
    known = replace(known, refused_rotations=_refused(tables["rotations"], rotations))
    routes = [route for e in tables["routes"] if (route := read_route(e, known))]
    _unique(routes, tables["routes"], problems)
    if problems.found:
        raise NotifyFileError(problems.sorted())
    return NotifyConfig(people, rotations, tuple(routes), source)


def _tables(document: dict[str, Any], text: str, problems: Problems) -> dict[str, list[Entry]]:
    """The entries of each kind of table; problems for anything else at the top."""
    for key in document:
        if key not in TABLES:
            line = TomlLines(text, key).top(key)
            problems.add(
                line,
                f"unknown table {key!r}{did_you_mean(_PLURAL.get(key, key), TABLES)}; a notify "
                "file holds [[people]], [[rotations]] and [[routes]]",
            )
    found: dict[str, list[Entry]] = {}
    for table, kind in zip(TABLES, ("person", "rotation", "route"), strict=True):
        lines = TomlLines(text, table)
        value = document.get(table, [])
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            problems.add(lines.top(table), f"write each of {table} as a [[{table}]] table")
            value = []
        found[table] = [Entry(lines, i, t, kind, problems) for i, t in enumerate(value)]
    return found


def _unique(found: list[T], entries: list[Entry], problems: Problems) -> dict[str, T]:
    """`found` by name; a problem for a name given twice."""
    by_name: dict[str, T] = {}
    first: dict[str, int] = {}
    for entry in entries:
        name = entry.data.get("name")
        if isinstance(name, str) and name in first:
            problems.add(
                entry.line("name"),
                f"{entry.label}: the name is used twice (first "
                f"at line {first[name]}): give each its own",
            )
        elif isinstance(name, str):
            first[name] = entry.line("name")
    for item in found:
        by_name.setdefault(item.name, item)
    return by_name


def _refused(entries: list[Entry], good: Mapping[str, object]) -> frozenset[str]:
    names = (e.data.get("name") for e in entries)
    return frozenset(n for n in names if isinstance(n, str) and n not in good)


def _person(entry: Entry, environ: Mapping[str, str]) -> Person | None:
    entry.unknown_keys(entry.data, PERSON_KEYS)
    name = entry.name()
    tenants = entry.names(
        "tenants", rule=IDENTIFIER, allowed=IDENTIFIER_RULE, example='["farm"]', required=True
    )
    account = entry.data.get("account", name)
    if not (isinstance(account, str) and _ACCOUNT.fullmatch(account)):
        entry.bad(
            "account",
            "account must be the login or API token name that acknowledges "
            'as this person, e.g. account = "jansen"',
        )
    channels = _channels(entry, environ)
    quiet = _quiet_hours(entry)
    zone = entry.zone()
    if not entry.ok:
        return None
    return Person(name, tenants, channels, zone, quiet, str(account))


def _channels(entry: Entry, environ: Mapping[str, str]) -> tuple[Channel, ...]:
    items = entry.data.get("channels")
    example = 'channels = [ { url_env = "JANSEN_NTFY_URL", label = "phone" } ]'
    if not isinstance(items, list) or not items or not all(isinstance(c, dict) for c in items):
        entry.bad("channels", f"a person needs at least one channel: {example}")
        return ()
    channels = []
    for i, item in enumerate(items):
        entry.unknown_keys(item, CHANNEL_KEYS, key="channels", item=i, what="a channel")
        url = _channel_url(entry, i, item, environ)
        label = item.get("label", "")
        if not isinstance(label, str) or len(label) > MAX_LABEL or not label.isprintable():
            entry.bad(
                "channels",
                f"channel {i + 1}: label must be text up to {MAX_LABEL} "
                "characters (it is what messages and logs show)",
                i,
            )
        elif url:
            channels.append(Channel(url, label))
    return tuple(channels)


def _channel_url(entry: Entry, i: int, item: dict[str, Any], environ: Mapping[str, str]) -> str:
    """The channel's URL from `url`, `url_file` or `url_env`. Messages never show the value
    of any of them: the line tells the user which it is."""
    given = [k for k in ("url", "url_file", "url_env") if k in item]

    def bad(what: str) -> str:
        entry.bad("channels", f"channel {i + 1}: {what}", i)
        return ""

    if len(given) != 1:
        return bad(
            "give exactly one of url, url_file (a file holding the URL) or url_env (an "
            "environment variable holding it); prefer the last two for URLs with tokens"
        )
    source, value = given[0], item[given[0]]
    if not isinstance(value, str) or not value.strip():
        return bad(f"{source} must be a non-empty string")
    if source != "url" and environ is NAMES_ONLY:
        return environ[value]
    if source == "url_file":
        try:
            url = Path(value).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            return bad(
                f"the file named by url_file cannot be read ({why}): it must hold the "
                "channel's Apprise URL, readable by the notifier"
            )
    elif source == "url_env":
        url = environ.get(value, "").strip()
        if not url:
            return bad(
                "the environment variable named by url_env is not set or empty: set "
                "it to the channel's Apprise URL where the notifier runs"
            )
    else:
        url = value.strip()
    if not _URL.fullmatch(url):
        return bad(
            f"the URL from {source} is not an Apprise URL: write SCHEME://…, e.g. "
            "ntfys://ntfy.sh/TOPIC or mailtos://USER:PASSWORD@HOST?to=ADDRESS"
        )
    return url


def _quiet_hours(entry: Entry) -> tuple[QuietHours, ...]:
    items = entry.data.get("quiet_hours", [])
    example = 'quiet_hours = [ { from = "22:00", to = "07:00", breakthrough = "critical" } ]'
    if not isinstance(items, list) or not all(isinstance(q, dict) for q in items):
        entry.bad("quiet_hours", f"quiet_hours must be a list of windows: {example}")
        return ()
    windows = []
    for i, item in enumerate(items):
        entry.unknown_keys(item, QUIET_KEYS, key="quiet_hours", item=i, what="a quiet window")
        start, end = clock(item.get("from")), clock(item.get("to"))
        breakthrough = item.get("breakthrough", "critical")
        if start is None or end is None:
            entry.bad(
                "quiet_hours",
                f"quiet window {i + 1}: from and to are times of day, "
                'e.g. from = "22:00", to = "07:00"',
                i,
            )
        elif start == end:
            entry.bad(
                "quiet_hours",
                f"quiet window {i + 1}: from and to are the same time: give the window a length",
                i,
            )
        elif breakthrough not in ("info", "warning", "critical"):
            entry.bad(
                "quiet_hours",
                f"quiet window {i + 1}: breakthrough is the lowest "
                "severity still sent: info, warning or critical",
                i,
            )
        else:
            windows.append(QuietHours(start, end, breakthrough))
    return tuple(windows)
