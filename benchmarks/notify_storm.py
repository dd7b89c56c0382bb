"""A storm: ingest's throughput with the notifier running and without it, while 1,000 alerts
raised within one minute of reading time reach 50 people; and the messages they get after
grouping.

Each round is the alert benchmark's throughput round (benchmarks/alerts_throughput.py: a
backlog of `--readings` mixed readings queued for ingest's session, then ingest in a process of
its own timed until it has handled them all, every reading counted in InfluxDB), with 1,000
pacemakers of 5 wards among them, each raising `tachycardia` once. In the `on` rounds `moclo
notify run` (its own process) follows the alerts: each ward's route tells its 10 people, with a
10 s group wait, through a `json://` channel to a local receiver. Rounds alternate off/on; the
figure is the ratio of the medians (target: within 5%).

    python -m benchmarks.notify_storm [--readings 50000 --rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from benchmarks.alerts_stack import BenchmarkFailed, Servers, local_servers
from benchmarks.alerts_throughput import mixed_readings, throughput_round
from devices.catalogue import DEVICE_TYPES
from moclo.stack import free_port
from tests.receivers import HttpReceiver

WARDS = [f"ward-{n}" for n in range(1, 6)]
PEOPLE_PER_WARD = 10
STORM = 1000


def storm_readings() -> list[tuple[str, bytes]]:
    """1,000 pacemakers at 170 bpm, one reading each, within the last minute."""
    example, now = DEVICE_TYPES["pacemaker"].example, time.time()
    return [
        (
            f"{WARDS[n % len(WARDS)]}/pacemaker/pm-{n:04d}/telemetry",
            orjson.dumps(
                {**example, "ts": now - 60 + 60 * n / STORM, "seq": 1, "heart_rate_bpm": 170}
            ),
        )
        for n in range(STORM)
    ]


def notify_file(receiver: HttpReceiver) -> str:
    parts = []
    for ward in WARDS:
        names = [f"{ward}-p{i}" for i in range(PEOPLE_PER_WARD)]
        parts += [
            f'[[people]]\nname = "{name}"\ntenants = ["{ward}"]\n'
            f'channels = [ {{ url = "json://{receiver.base}/{name}" }} ]\n'
            for name in names
        ]
        parts.append(
            f'[[routes]]\nname = "{ward}"\ntenant = "{ward}"\ndevice_types = ["pacemaker"]\n'
            f'group_wait = "10s"\nnotify = {orjson.dumps(names).decode()}\n'
        )
    return "\n".join(parts)


def owed(port: int) -> int:
    try:
        return int(httpx.get(f"http://127.0.0.1:{port}/healthz").json()["outbox"]["deliveries"])
    except httpx.HTTPError:
        return -1


def notified_round(
    servers: Servers, messages: list[tuple[str, bytes]], name: str
) -> dict[str, Any]:
    receiver = HttpReceiver().start()
    work = servers.workdir / name
    work.mkdir()
    (work / "notify.toml").write_text(notify_file(receiver))
    port = free_port()
    settings = servers.settings(name)
    env = {
        **os.environ,
        "MOCLO_MQTT_URL": settings.mqtt_url,
        "MOCLO_MQTT_USERNAME": f"notify-{name}",
        "MOCLO_INFLUX_URL": settings.influx_url,
        "MOCLO_INFLUX_DB": settings.influx_db,
        "MOCLO_TOPIC_PREFIX": settings.topic_prefix,
        "MOCLO_NOTIFY_FILE": str(work / "notify.toml"),
        "MOCLO_NOTIFY_OUTBOX": str(work / "outbox.sqlite"),
        "MOCLO_NOTIFY_LISTEN": f"127.0.0.1:{port}",
    }
    with (work / "notify.log").open("w") as log:
        notifier = subprocess.Popen(
            [sys.executable, "-m", "moclo.cli", "notify", "run"], stdout=log, stderr=log, env=env
        )
    try:
        deadline = time.monotonic() + 60
        while owed(port) < 0:
            if notifier.poll() is not None or time.monotonic() > deadline:
                raise BenchmarkFailed(f"the notifier did not start: see {work / 'notify.log'}")
            time.sleep(0.1)  # polling its health endpoint with a deadline
        result = throughput_round(servers, messages, rules=True, name=name)
        deadline = time.monotonic() + 120
        while owed(port) != 0 or len(receiver.received) == 0:
            if time.monotonic() > deadline:
                raise BenchmarkFailed("the notifier did not deliver the storm within 120 s")
            time.sleep(0.2)  # polling with a deadline
        told = {request.path.strip("/") for request in receiver.received}
        if len(told) != len(WARDS) * PEOPLE_PER_WARD:
            raise BenchmarkFailed(f"only {len(told)} of 50 people were told")
        result["messages"] = len(receiver.received)
        return result
    finally:
        notifier.terminate()
        notifier.wait(30)
        receiver.stop()


def storm(servers: Servers, readings: int, rounds: int, seed: int) -> dict[str, Any]:
    messages = mixed_readings(readings, seed=seed) + storm_readings()
    off: list[float] = []
    on: list[float] = []
    sent: list[int] = []
    for r in range(1, rounds + 1):
        quiet = throughput_round(servers, messages, rules=True, name=f"storm{r}-off")
        off.append(quiet["per_s"])
        loud = notified_round(servers, messages, name=f"storm{r}-on")
        on.append(loud["per_s"])
        sent.append(loud["messages"])
        print(f"round {r}: off {quiet['per_s']:.0f}/s, on {loud['per_s']:.0f}/s, "
              f"{loud['messages']} messages", file=sys.stderr)  # fmt: skip
    return {
        "messages_per_round": len(messages),
        "alerts": STORM,
        "people": len(WARDS) * PEOPLE_PER_WARD,
        "off_per_s": off,
        "on_per_s": on,
        "ratio_on_off": statistics.median(on) / statistics.median(off),
        "messages_sent": sent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, local_servers(Path(tmp)) as servers:
        result = storm(servers, args.readings, args.rounds, args.seed)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
