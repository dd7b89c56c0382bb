"""How the browser tests and the dashboard benchmark start Debian's Chromium (Playwright)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from playwright.sync_api import BrowserContext, Page, expect

CHROMIUM = "/usr/bin/chromium"
# An `expect` without its own timeout waits 5 s by default: too tight for Chromium on two
# cores that the suite's other worker (and whatever else runs) keep busy. A longer deadline
# costs nothing when the page is right; a check that must be quick says so with its own.
expect.set_options(timeout=15_000)
# Headless, and none of Chromium's own calls home: this machine's network is closed, and
# Chromium's background requests would be refused, many at a time.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def guarded(context: BrowserContext) -> Iterator[Page]:
    """A page of `context` that fails the test if it throws, if the Content-Security-Policy
    blocks anything (the dashboard must work under it, not around it; Chromium reports each
    violation on the console), or if it fetches from anywhere but the dashboard's own server.
    Closes `context` at the end."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
    )
    outside: list[str] = []
    page.on(
        "request", lambda r: None if r.url.startswith("http://127.0.0.1") else outside.append(r.url)
    )
    try:
        yield page
    finally:
        context.close()
    assert errors == [], f"the page threw: {errors}"
    assert outside == [], f"the page fetched from elsewhere: {outside}"
