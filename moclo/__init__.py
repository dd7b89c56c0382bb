"""The `moclo` command (`moclo.cli`), the top layer: nothing imports it.

httpx's `__init__` imports its own command line (`httpx._main`) whenever click, rich and
pygments are installed (apprise and uvicorn bring click; development tools the other two), and
that costs every moclo process about 4.5 MB of resident memory (measured on `moclo ingest`'s
imports: 50.4 → 45.9 MB) for a tool moclo never runs. Marking the module absent before httpx is
first imported makes httpx take its own fallback (`httpx.main` then says to install
`httpx[cli]`). `setdefault`: where something imported it already, it stays.
"""

import sys

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
