"""The rule engine's hot modules compiled with mypyc, used only when built from exactly these
sources; otherwise the Python sources, which are the same program.

    .venv/bin/python -m ingest.alerts.build_compiled     # build (./dev up and ./dev test do)

The build (mypyc, part of mypy; a C compiler and Python's headers) goes into the virtual
environment, in a folder named by a digest of the compiled modules' sources and the Python
version; the source tree is never written. At import, `ingest.alerts` looks for the folder of
its sources' digest: found, its compiled modules come first on the package's path; not found
(never built, a source edited since, another Python) or not loadable, the sources are used.
So a compiled module can never be older than its source. MOCLO_PURE_PYTHON=1 uses the sources
regardless (the tests run the property tests both ways).

mypyc compiles the typed Python as it is (no annotations of its own): the alert changes are
byte-identical either way (`benchmarks.rules` with one checkout of each; the property tests).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from pathlib import Path

# The modules on the per-reading path (what they import stays Python).
MODULES = ("verdict", "baselines", "conditions", "lifecycle", "engine")
_HERE = Path(__file__).resolve().parent


def build_folder() -> Path:
    """Where the build for these sources and this Python is (or would be): under
    MOCLO_COMPILED_DIR if set, else the environment's `moclo-compiled` folder."""
    root = os.environ.get("MOCLO_COMPILED_DIR") or Path(sys.prefix) / "moclo-compiled"
    sources = [(_HERE / f"{name}.py").read_bytes() for name in MODULES]
    return Path(root) / digest(sources)


def digest(sources: list[bytes]) -> str:
    """What a build is named by: the modules' sources and the Python version."""
    made = hashlib.sha256(sys.version.encode())
    for source in sources:
        made.update(hashlib.sha256(source).digest())
    return made.hexdigest()[:16]


def activate(package_path: list[str]) -> bool:
    """Puts the compiled modules first on `ingest.alerts`' path if built from these sources;
    True if they are the ones imported. Called by the package before it imports the engine."""
    folder = build_folder() / "ingest" / "alerts"
    if os.environ.get("MOCLO_PURE_PYTHON") or not folder.is_dir():
        return False
    package_path.insert(0, str(folder))
    sys.path.append(str(folder.parent.parent))  # mypyc's shared library, a top-level module
    try:
        for name in MODULES:
            module = importlib.import_module(f"ingest.alerts.{name}")
            if not (module.__file__ or "").startswith(str(folder)):
                raise ImportError(f"{name} is missing from the build")  # all or none
    except ImportError:  # built by another mypyc or for another machine: the sources, then
        package_path.remove(str(folder))
        sys.path.remove(str(folder.parent.parent))
        for name in MODULES:
            sys.modules.pop(f"ingest.alerts.{name}", None)
        return False
    return True


def compiled() -> bool:
    """Whether the engine in use is the compiled one."""
    where = importlib.import_module("ingest.alerts.engine").__file__ or ""
    return where.endswith((".so", ".pyd"))
