"""Where things are in a rules file's text, so that every problem is told as FILE:LINE:
tomllib reports no positions for values, so the lines of `[[rule]]` headers and keys are
found here."""

from __future__ import annotations

import re
import tomllib


class Lines:
    """Where things are in the text: tomllib reports no positions for values."""

    _RULE = re.compile(r"""\s*\[\[\s*(?:rule|"rule"|'rule')\s*\]\]\s*(?:#.*)?""")
    # A table header, not a row of a multi-line array such as a polygon's corners.
    _HEADER = re.compile(r"""\s*\[\[?\s*[A-Za-z_"'][^\],#]*\]\]?\s*(?:#.*)?""")

    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")  # TOML counts lines by \n alone
        self.rules = [n for n, line in enumerate(self.lines, 1) if self._RULE.fullmatch(line)]
        self.headers = [n for n, line in enumerate(self.lines, 1) if self._HEADER.fullmatch(line)]

    def table(self, index: int) -> int:
        """The line of the index-th `[[rule]]` header."""
        if index < len(self.rules):
            return self.rules[index]
        return self.top("rule")  # written as an inline array: the best we can do

    def key(self, index: int, key: str) -> int:
        """The line of `key` in the index-th `[[rule]]` table, else the table's header."""
        start = self.table(index)
        end = next((h for h in self.headers if h > start), len(self.lines) + 1)
        return self._find(key, start + 1, end) or start

    def top(self, key: str) -> int:
        """The line of a top-level key (before any table) or table, else 1."""
        end = self.headers[0] if self.headers else len(self.lines) + 1
        header = re.compile(rf"""\s*\[\[?\s*["']?{re.escape(key)}["']?\s*[\].]""")
        tables = (n for n, line in enumerate(self.lines, 1) if header.match(line))
        return self._find(key, 1, end) or next(tables, 1)

    def _find(self, key: str, start: int, end: int) -> int:
        pattern = re.compile(rf"""\s*["']?{re.escape(key)}["']?\s*[=.]""")
        lines = range(start, min(end, len(self.lines) + 1))
        return next((n for n in lines if pattern.match(self.lines[n - 1])), 0)


def error_line(exc: tomllib.TOMLDecodeError, text: str) -> int:
    found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
    if found:
        return int(found.group(1))
    return text.count("\n") + 1  # "(at end of document)"
