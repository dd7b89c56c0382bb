"""How the browser tests and the dashboard benchmark start Debian's Chromium (Playwright)."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
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
