"""Builds the rule engine's compiled modules (see `compiled.py`): mypyc, from the source tree,
into `compiled.build_folder()`; nothing is written into the source tree.

    .venv/bin/python -m ingest.alerts.build_compiled     # ./dev up and ./dev test run it

Exits 1 with a message saying what is missing if it cannot (the engine then stays Python).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ingest.alerts.compiled import MODULES, build_folder

_HERE = Path(__file__).resolve().parent
_SOURCE_ROOT = _HERE.parent.parent  # the folder that holds the `ingest` package


def build() -> Path:
    """Compiles MODULES into `build_folder()`, unless built already."""
    target = build_folder()
    if (target / "ingest" / "alerts").is_dir():
        return target
    sources = [str(_HERE / f"{name}.py") for name in MODULES]
    with tempfile.TemporaryDirectory(prefix="moclo-mypyc-") as tmp:
        setup = (
            "from setuptools import setup\n"
            "from mypyc.build import mypycify\n"
            f"setup(name='moclo-compiled', ext_modules=mypycify({sources!r}, target_dir={tmp!r}),"
            f" script_args=['build_ext', '--build-lib', {str(target)!r}, '--build-temp', {tmp!r}])"
        )
        # From the source root, so that mypyc names the modules ingest.alerts.*.
        done = subprocess.run(
            [sys.executable, "-c", setup], cwd=_SOURCE_ROOT, capture_output=True, text=True
        )
    if done.returncode:
        shutil.rmtree(target, ignore_errors=True)  # half a build must not be taken for one
        raise BuildFailed(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "")
    return target


class BuildFailed(Exception):
    """mypyc or the C compiler failed; the message is the last line they wrote."""


def main() -> int:
    try:
        target = build()
    except (BuildFailed, OSError) as exc:
        print(
            f"moclo: the rule engine stays Python, as correct and slower ({exc}). To compile "
            "it: mypy (pip install mypy), a C compiler and Python's headers (Debian: apt-get "
            "install gcc python3-dev), then python -m ingest.alerts.build_compiled",
            file=sys.stderr,
        )
        return 1
    print(f"moclo: the rule engine is compiled ({target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
