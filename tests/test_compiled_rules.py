"""The rule engine compiled with mypyc (`ingest/alerts/compiled.py`) is used only when built from
the very sources in the tree, falls back to them otherwise, and stores byte-identical alerts.

When a build exists (./dev test makes one), this whole suite runs on the compiled engine; the
Python engine is then checked here in a subprocess, on the pinned seeded streams."""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.alerts import compiled

ROOT = Path(__file__).resolve().parent.parent
BUILT = (compiled.build_folder() / "ingest" / "alerts").is_dir()
NOT_BUILT = "no build for these sources: .venv/bin/python -m ingest.alerts.build_compiled"

# The seeded streams of test_alert_restarts.py, judged as that test does, in a fresh process.
JUDGE_THE_PINNED_STREAMS = """
import hashlib
from ingest.alerts import AlertEngine, compiled
from tests.test_alert_restarts import BOOK, CHANGES_OF_C4EB61D, run, stream
from tests.test_alerts import T0, Wall
for seed, pinned in sorted(CHANGES_OF_C4EB61D.items()):
    wall = Wall(T0)
    got = run(AlertEngine(BOOK, wall_ns=wall), wall, stream(seed))
    lines = b"".join(a.to_line().encode() + b"\\n" for a in got)
    assert (len(got), hashlib.sha256(lines).hexdigest()) == pinned, seed
print("compiled" if compiled.compiled() else "python")
"""


def python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("engine", ["python", "compiled"])
def test_either_engine_stores_the_pinned_alerts_byte_for_byte(engine: str) -> None:
    if engine == "compiled" and not BUILT:
        pytest.skip(NOT_BUILT)
    pure = {"MOCLO_PURE_PYTHON": "1"} if engine == "python" else {}
    done = python(JUDGE_THE_PINNED_STREAMS, **pure)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [engine]  # and it was that engine that judged


def test_this_suite_runs_on_the_compiled_engine_when_there_is_one() -> None:
    if not BUILT:
        pytest.skip(NOT_BUILT)
    assert compiled.compiled() is (not os.environ.get("MOCLO_PURE_PYTHON"))


def test_a_build_that_does_not_load_is_passed_over_for_the_sources(tmp_path: Path) -> None:
    # A folder with the name of these sources' build, but broken modules in it (say, built by
    # another compiler): the engine must come from the sources, and work.
    fake = tmp_path / compiled.build_folder().name / "ingest" / "alerts"
    fake.mkdir(parents=True)
    for name in compiled.MODULES:
        (fake / f"{name}{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"not ELF")
    check = (
        "from ingest.alerts import AlertEngine, compiled\n"
        "print(compiled.compiled(), AlertEngine().open_alerts())\n"
    )
    done = python(check, MOCLO_COMPILED_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "0"]
    if BUILT:  # the control: the real build, found the same way, is taken
        real = python(check, MOCLO_COMPILED_DIR=str(compiled.build_folder().parent))
        assert real.stdout.split() == ["True", "0"], real.stderr


def test_a_build_missing_a_module_is_not_used_in_part(tmp_path: Path) -> None:
    # A compiled engine beside the Python conditions would not recognise their states: all or
    # none. (The build is renamed into place whole; this is a folder damaged afterwards.)
    if not BUILT:
        pytest.skip(NOT_BUILT)
    damaged = tmp_path / compiled.build_folder().name
    shutil.copytree(compiled.build_folder(), damaged)
    check = (
        "from ingest.alerts import AlertEngine, compiled\n"
        "import ingest.alerts.conditions as c, ingest.alerts.engine as e\n"
        "print(compiled.compiled(), c.__file__.endswith('.py'), e.__file__.endswith('.py'))\n"
    )
    whole = python(check, MOCLO_COMPILED_DIR=str(tmp_path))
    assert whole.stdout.split() == ["True", "False", "False"], whole.stderr  # the control
    [conditions] = (damaged / "ingest" / "alerts").glob("conditions.*")
    conditions.unlink()
    done = python(check, MOCLO_COMPILED_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "True"]


def test_a_build_is_named_by_its_sources_so_an_edit_is_never_run_stale() -> None:
    sources = [(ROOT / "ingest" / "alerts" / f"{n}.py").read_bytes() for n in compiled.MODULES]
    assert compiled.digest(sources) == compiled.build_folder().name
    for i in range(len(sources)):
        edited = [*sources[:i], sources[i] + b"\n", *sources[i + 1 :]]
        assert compiled.digest(edited) != compiled.digest(sources), compiled.MODULES[i]


def test_without_a_c_compiler_the_build_says_so_at_once_and_leaves_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ingest.alerts.build_compiled"],
        cwd=ROOT,
        env={**os.environ, "MOCLO_COMPILED_DIR": str(tmp_path), "PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "stays Python" in done.stderr and "no C compiler" in done.stderr
    assert list(tmp_path.iterdir()) == []
