"""The four writers the ingest benchmark compares, each as the command that starts it as a
process of its own, with its own topic prefix, client id (its session) and database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks import ingest_nodered
from core.settings import ENVIRONMENT, Settings

ROOT = Path(__file__).resolve().parent.parent
Launch = tuple[list[str], dict[str, str]]  # argv, environment


@dataclass(frozen=True, slots=True)
class Contender:
    key: str  # a, b, c, d
    label: str
    # The command for one run: settings, a folder of its own, and the messages to expect.
    launch: Callable[[Settings, Path, int], Launch]
    # (a) times itself (it stores nothing); the others are timed by InfluxDB's count.
    times_itself: bool = False


def topic_filter(settings: Settings) -> str:
    return f"{settings.topic_prefix}/+/+/+/telemetry"


def _python(module: str, *args: str) -> Launch:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return [sys.executable, "-m", module, *args], env


def bare(settings: Settings, _workdir: Path, expected: int) -> Launch:
    return _python(
        "benchmarks.ingest_bare",
        *("--mqtt-url", settings.mqtt_url, "--topic", topic_filter(settings)),
        *("--client-id", settings.ingest_id, "--expected", str(expected)),
    )


def lean(settings: Settings, _workdir: Path, _expected: int) -> Launch:
    return _python(
        "benchmarks.ingest_lean",
        *("--mqtt-url", settings.mqtt_url, "--topic", topic_filter(settings)),
        *("--client-id", settings.ingest_id, "--influx-url", settings.influx_url),
        *("--db", settings.influx_db),
    )


def moclo_ingest(settings: Settings, workdir: Path, _expected: int) -> Launch:
    """`moclo ingest` with its defaults (validation, alert rules, acknowledgement after
    storage), configured only through MOCLO_* variables, as a deployment would."""
    values = settings.model_dump(exclude_none=True) | {
        "spool_dir": str(workdir / "spool"),
        "registry": str(workdir / "registry.sqlite"),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCLO_")}
    env |= {ENVIRONMENT[name]: str(value) for name, value in values.items() if name in ENVIRONMENT}
    return [str(Path(sys.executable).parent / "moclo"), "ingest"], env


def baseline(checkout: Path) -> Contender:
    """(p): `moclo ingest` as another commit has it, run by this interpreter with that
    checkout first on the path, so two commits are compared in one run on the same readings
    (`--baseline DIR`; make DIR with `git worktree add DIR COMMIT`). `-P`: the current folder
    must not come before the checkout on the path."""
    commit = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()

    def launch(settings: Settings, workdir: Path, expected: int) -> Launch:
        _, env = moclo_ingest(settings, workdir, expected)
        return [sys.executable, "-P", "-m", "moclo.cli", "ingest"], env | {
            "PYTHONPATH": str(checkout)
        }

    return Contender("p", f"moclo ingest at {commit or checkout} (baseline)", launch)


def node_red(settings: Settings, workdir: Path, _expected: int) -> Launch:
    return ingest_nodered.command(settings, settings.ingest_id, workdir), dict(os.environ)


CONTENDERS = {
    "a": Contender("a", "bare paho subscriber (counts only)", bare, times_itself=True),
    "b": Contender("b", "lean consumer (paho, orjson, line protocol)", lean),
    "c": Contender("c", "moclo ingest", moclo_ingest),
    "d": Contender("d", f"Node-RED {ingest_nodered.NODE_RED} + influxdb 0.7.0", node_red),
}
