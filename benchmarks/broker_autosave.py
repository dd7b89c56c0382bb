"""What a shorter `autosave_interval` costs Mosquitto: its loss window on kill -9 is up to one
interval of messages it already acknowledged, and each save writes the whole in-memory state
(every queued message) on the broker's only thread.

For each interval, a fresh broker with moclo's own settings (moclo/stack.py) holds `--queued`
QoS 1 messages of about 200 bytes for an offline persistent session (ingest away). Over
`--window` seconds: the broker's CPU time (from /proc), each save's duration (from the file it
writes), and the PUBACK times of a client publishing meanwhile (a save holds the broker's only
thread). Ratios are against the 60 s interval of the same run.

    .venv/bin/python -m benchmarks.broker_autosave --out benchmarks/results/broker.md
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.ingest_procfs import cpu_seconds
from benchmarks.machine import machine, server_versions, write_results
from moclo.stack import MosquittoServer, free_port

TOPIC = "bench/farm/cow_tracker/cow-{n}/telemetry"
PAYLOAD = (
    b'{"ts":1795327200,"seq":1,"body_temp_c":38.6,"activity":420,"rumination_min":31,'
    b'"lat":52.09,"lon":5.12,"battery_pct":87.5,"note":"' + b"x" * 50 + b'"}'
)


class Broker(MosquittoServer):
    """moclo's broker settings with another `autosave_interval`."""

    def __init__(self, directory: Path, port: int, interval_s: int) -> None:
        super().__init__(directory, port)
        self.interval_s = interval_s

    @property
    def database(self) -> Path:
        return self.directory / "data" / "mosquitto.db"

    def write_config(self) -> None:
        super().write_config()
        lines = [
            line
            for line in self.config_path.read_text().splitlines()
            if not line.startswith(("autosave_interval", "autosave_on_changes"))
        ]
        lines += [f"autosave_interval {self.interval_s}", "autosave_on_changes false"]
        self.config_path.write_text("\n".join(lines) + "\n")


def client(port: int, client_id: str, *, clean: bool) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def queue_messages(broker: Broker, count: int) -> None:
    """`count` QoS 1 messages queued for an offline persistent session (ingest away)."""
    holder = client(broker.port, "holder", clean=False)
    subscribed = holder.subscribe("bench/#", qos=1)[1]
    assert subscribed is not None
    deadline = time.monotonic() + 10
    while not broker.log_since_start().count("holder 1 bench/#"):
        if time.monotonic() > deadline:
            raise RuntimeError("the holder's subscription did not show in the broker's log")
        time.sleep(0.01)
    holder.disconnect()
    holder.loop_stop()
    publisher = client(broker.port, "publisher", clean=True)
    for start in range(0, count, 10_000):  # paho refuses more than ~65k outstanding
        chunk = range(start, min(count, start + 10_000))
        infos = [publisher.publish(TOPIC.format(n=n % 100), PAYLOAD, qos=1) for n in chunk]
        for info in infos:
            info.wait_for_publish(60)
    publisher.disconnect()
    publisher.loop_stop()


class SaveWatcher:
    """Times each save from the file Mosquitto writes it to (`mosquitto.db.new`, renamed over
    `mosquitto.db` when done), sampled every half millisecond on a thread of its own."""

    def __init__(self, database: Path) -> None:
        self.partial = database.with_name(database.name + ".new")
        self.durations: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="save-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        began: float | None = None
        while not self._stop.is_set():
            present = self.partial.exists()
            now = time.perf_counter()
            if present and began is None:
                began = now
            elif not present and began is not None:
                self.durations.append(now - began)
                began = None
            time.sleep(0.0005)  # a sampling period, not synchronisation


class Prober:
    """A client publishing QoS 1 every 20 ms to a topic nobody reads, timing each PUBACK: a
    save blocks the broker's only thread, and shows as a slow acknowledgement."""

    def __init__(self, port: int) -> None:
        self.latencies: list[float] = []
        self._sent: dict[int, float] = {}
        self._client = client(port, "prober", clean=True)
        self._client.on_publish = self._acked
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._client.disconnect()
        self._client.loop_stop()

    def _run(self) -> None:
        while not self._stop.wait(0.02):  # the probing rate
            info = self._client.publish("probe/nobody", b"x", qos=1)
            self._sent[info.mid] = time.perf_counter()

    def _acked(self, c: object, u: object, mid: int, rc: object, p: object) -> None:
        sent = self._sent.pop(mid, None)
        if sent is not None:
            self.latencies.append(time.perf_counter() - sent)


@dataclass
class Run:
    interval_s: int
    cpu_s: float  # the broker's, over the window
    saves: int  # completed in the window
    save_ms: float  # median duration of one save
    save_max_ms: float
    puback_max_ms: float  # the slowest acknowledgement in the window
    puback_p99_ms: float
    database_bytes: int


def measure(interval_s: int, *, queued: int, window_s: float) -> Run:
    with tempfile.TemporaryDirectory(prefix="moclo-bench-autosave-") as tmp:
        broker = Broker(Path(tmp), free_port(), interval_s)
        broker.start()
        try:
            assert broker.pid is not None
            queue_messages(broker, queued)
            watcher = SaveWatcher(broker.database)
            prober = Prober(broker.port)
            cpu0 = cpu_seconds(broker.pid)
            time.sleep(window_s)  # the measured span itself
            cpu = cpu_seconds(broker.pid) - cpu0
            prober.stop()
            watcher.stop()
            size = broker.database.stat().st_size if broker.database.exists() else 0
        finally:
            broker.stop()
    saves = watcher.durations or [0.0]
    latencies = sorted(prober.latencies)
    return Run(
        interval_s=interval_s,
        cpu_s=cpu,
        saves=len(watcher.durations),
        save_ms=statistics.median(saves) * 1000,
        save_max_ms=max(saves) * 1000,
        puback_max_ms=latencies[-1] * 1000,
        puback_p99_ms=latencies[int(0.99 * (len(latencies) - 1))] * 1000,
        database_bytes=size,
    )


def report(sections: dict[int, list[Run]], *, window_s: float, command: str) -> str:
    lines = [
        "# Mosquitto's autosave: what a shorter loss window costs",
        "",
        f"{time.strftime('%Y-%m-%d')}, on {machine()}; {server_versions()}.",
        "",
        f"Reproduce: `{command}`",
        "",
    ]
    for queued, runs in sections.items():
        lines += section(runs, queued=queued, window_s=window_s)
    lines += [
        "Broker CPU: utime + stime from /proc over the window (10 ms resolution), probe traffic",
        "included (the same in every row). Period: the window over the saves in it (Mosquitto",
        "2.0.11 saves when more than `autosave_interval` seconds have passed, checked once a",
        "second, so every interval + 1 s). One save: from `mosquitto.db.new` appearing to its",
        "rename (it is fsynced first), sampled every 0.5 ms. Time spent saving: saves × the",
        "median save, as a share of the window. A save runs on the broker's only thread, so for",
        "its duration nothing is routed or acknowledged; it writes every queued message, so its",
        "cost grows with the queue.",
    ]
    return "\n".join(lines) + "\n"


def section(runs: list[Run], *, queued: int, window_s: float) -> list[str]:
    base = next(r for r in runs if r.interval_s == 60)
    lines = [
        f"## {queued:,} messages queued",
        "",
        f"{queued:,} QoS 1 messages of {len(PAYLOAD)} bytes queued for an offline persistent "
        f"session (ingest away), then {window_s:.0f} s measured while a client publishes QoS 1 "
        "every 20 ms and times each PUBACK. One broker per row, one run; the disk is shared "
        "with other work on the machine, so save times vary from run to run.",
        "",
        "| autosave_interval | saves | period | broker CPU | × the 60 s row "
        "| one save (median, max) | time spent saving | slowest PUBACK | p99 PUBACK | file |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        ratio = r.cpu_s / base.cpu_s if base.cpu_s else float("inf")
        busy = 100 * r.saves * r.save_ms / 1000 / window_s
        lines.append(
            f"| {r.interval_s} s | {r.saves} | "
            + (f"{window_s / r.saves:.1f} s" if r.saves else "-")
            + f" | {r.cpu_s:.2f} s | "
            f"{ratio:.2f} | {r.save_ms:.0f} ms, {r.save_max_ms:.0f} ms | {busy:.1f} % | "
            f"{r.puback_max_ms:.0f} ms | {r.puback_p99_ms:.0f} ms | "
            f"{r.database_bytes / 1e6:.1f} MB |"
        )
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queued", default="10000", help="queue sizes, comma-separated")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured per row")
    parser.add_argument("--intervals", default="1,5,10,60")
    parser.add_argument("--out", default="-")
    parser.add_argument("--json")
    args = parser.parse_args()
    intervals = [int(i) for i in args.intervals.split(",")]
    if 60 not in intervals:
        parser.error("--intervals must include 60, the baseline")
    sections: dict[int, list[Run]] = {}
    for queued in (int(q) for q in args.queued.split(",")):
        sections[queued] = []
        for interval in intervals:
            run = measure(interval, queued=queued, window_s=args.window)
            print(queued, run, flush=True)
            sections[queued].append(run)
    command = (
        f".venv/bin/python -m benchmarks.broker_autosave --queued {args.queued} "
        f"--window {args.window:g} --intervals {args.intervals}"
    )
    text = report(sections, window_s=args.window, command=command)
    figures = {str(q): [r.__dict__ for r in runs] for q, runs in sections.items()}
    write_results(figures, text, out=args.out, json_path=args.json)


if __name__ == "__main__":
    main()
