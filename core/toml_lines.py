"""Where things are in a TOML text, for FILE:LINE errors: tomllib reports no positions for
values, only for syntax errors. Used by the rules file and the automations file."""

from __future__ import annotations

import re
import tomllib


class TomlLines:
    """The lines of the `[[NAME]]` tables of one text, and of the keys within them."""

    # A table header, not a row of a multi-line array such as a polygon's corners.
    _HEADER = re.compile(r"""\s*\[\[?\s*[A-Za-z_"'][^\],#]*\]\]?\s*(?:#.*)?""")

    def __init__(self, text: str, table: str) -> None:
        self.name = table
        quoted = re.escape(table)
        entry = re.compile(rf"""\s*\[\[\s*(?:{quoted}|"{quoted}"|'{quoted}')\s*\]\]\s*(?:#.*)?""")
        self.lines = text.split("\n")  # TOML counts lines by \n alone
        self.tables = [n for n, line in enumerate(self.lines, 1) if entry.fullmatch(line)]
        self.headers = [n for n, line in enumerate(self.lines, 1) if self._HEADER.fullmatch(line)]

    def table(self, index: int) -> int:
        """The line of the index-th `[[NAME]]` header."""
        if index < len(self.tables):
            return self.tables[index]
        return self.top(self.name)  # written as an inline array: the best we can do

    def key(self, index: int, key: str) -> int:
        """The line of `key` in the index-th `[[NAME]]` table (or in a sub-table of it, such
        as `[NAME.command]`), else the table's header."""
        start = self.table(index)
        later = [n for n in self.tables if n > start]
        end = later[0] if later else len(self.lines) + 1
        return self._find(key, start + 1, end) or start

    def sub_key(self, index: int, sub: str, key: str) -> int:
        """The line of `key` in the index-th entry's `[NAME.sub]` table (or of `sub = {...}`
        written inline), else that table's header, else the entry's header."""
        start = self.table(index)
        later = [n for n in self.tables if n > start]
        end = later[0] if later else len(self.lines) + 1
        header = re.compile(
            rf"""\s*\[\s*{re.escape(self.name)}\s*\.\s*["']?{re.escape(sub)}["']?\s*\]"""
        )
        at = next((n for n in range(start + 1, end) if header.match(self.lines[n - 1])), 0)
        if not at:
            return self._find(sub, start + 1, end) or start
        return self._find(key, at + 1, end) or at

    def element(self, index: int, key: str, item: int) -> int:
        """The line where the item-th `{...}` of the array `key` in the index-th `[[NAME]]`
        table opens (`channels = [ { url = … }, … ]` over several lines), else `key`'s line."""
        at = self.key(index, key)
        depth, seen, quote = 0, -1, ""
        for n in range(at, len(self.lines) + 1):
            text = self.lines[n - 1]
            start = text.find("=") + 1 if n == at else 0
            escaped = False
            for char in text[start:]:
                if quote:  # inside a string: brackets do not count
                    if escaped:
                        escaped = False
                    elif char == "\\" and quote == '"':
                        escaped = True
                    elif char == quote:
                        quote = ""
                elif char in "\"'":
                    quote = char
                elif char == "#":
                    break
                elif char in "[{":
                    depth += 1
                    if char == "{" and depth == 2:  # an item of the array opens
                        seen += 1
                        if seen == item:
                            return n
                elif char in "]}":
                    depth -= 1
                    if depth == 0:
                        return at
        return at

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
    """The line a TOML syntax error is at."""
    found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
    if found:
        return int(found.group(1))
    return text.count("\n") + 1  # "(at end of document)"
