"""A block of a docs page generated from code and kept between two markers (the settings
table, the command catalogue): replaced in place, or checked, so a page cannot drift from the
declarations it documents. The modules that render a block call `run` as their `main`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class GeneratedBlock:
    page: Path
    begin: str  # the marker lines, each ending in a line break
    end: str
    what: str  # what the block is, for messages: "the settings table"
    module: str  # the module that renders it: `python -m MODULE`
    render: Callable[[], str]

    def within(self, text: str) -> str:
        """`text` with what stands between the markers replaced by the rendered block."""
        before, found, rest = text.partition(self.begin)
        _, found_end, after = rest.partition(self.end)
        if not (found and found_end):
            raise ValueError(f"{self.page} lacks {self.what}'s markers")
        return before + self.begin + self.render() + self.end + after

    def run(self, argv: list[str] | None, description: str | None) -> int:
        """Rewrites the block in its page, or with `--check` only says whether it is current
        (exit 1 if not)."""
        parser = argparse.ArgumentParser(prog=f"python -m {self.module}", description=description)
        parser.add_argument("--check", action="store_true", help="only say whether it is current")
        args = parser.parse_args(argv)
        text = self.page.read_text()
        current = self.within(text)
        if args.check:
            if current != text:
                print(
                    f"{self.page}: {self.what} is out of date; run python -m {self.module}",
                    file=sys.stderr,
                )
                return 1
            return 0
        self.page.write_text(current)
        return 0
