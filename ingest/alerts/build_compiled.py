"""Builds the rule engine's compiled modules (see `compiled.py`): mypyc, from the source tree,
into `compiled.build_folder()`; nothing is written into the source tree.

    .venv/bin/python -m ingest.alerts.build_compiled     # ./dev up and ./dev test run it

Exits 1 with a message saying what is missing if it cannot (the engine then stays Python).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
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
    _check_tools()
    sources = [str(_HERE / f"{name}.py") for name in MODULES]
    # Built beside the target and renamed into place whole: an ingest starting meanwhile must
    # not find half a build (a compiled engine with Python conditions would not work).
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="moclo-mypyc-") as tmp:
        setup = (
            "from setuptools import setup\n"
            "from mypyc.build import mypycify\n"
            f"setup(name='moclo-compiled', ext_modules=mypycify({sources!r}, target_dir={tmp!r}),"
            f" script_args=['build_ext', '--build-lib', {str(partial)!r}, '--build-temp', {tmp!r}])"
        )
        # From the source root, so that mypyc names the modules ingest.alerts.*.
        done = subprocess.run(
            [sys.executable, "-c", setup], cwd=_SOURCE_ROOT, capture_output=True, text=True
        )
    if done.returncode:
        shutil.rmtree(partial, ignore_errors=True)
        raise BuildFailed(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "")
    try:
        partial.rename(target)
    except OSError:  # another build of the same sources got there first: it is the same
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _check_tools() -> None:
    """Fails at once, not after mypyc's type check, if a tool is missing."""
    if importlib.util.find_spec("mypyc") is None:
        raise BuildFailed("mypyc is not installed")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        raise BuildFailed("Python's headers (Python.h) are not installed")
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        raise BuildFailed(f"no C compiler ({compiler})")


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
