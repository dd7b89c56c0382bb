"""`moclo up --engine rabbitmq` (issue 19, item 6): a 3-node cluster of its own (not the
session's `engine`), two ingest workers over the partitions, serve and a simulated fleet
spread over the nodes; readings reach the dashboard's API; Ctrl-C stops everything, leaving
no Erlang node (beam) and no epmd behind. One test: the cluster's boot takes about 30 s."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import httpx

from moclo.stack import InfluxServer, free_port
from tests.helpers import wait_until
from tests.test_commands import Output, _moclo


def processes_mentioning(text: str) -> list[str]:
    """The command lines of running processes that name `text` (a beam names its data
    folder in its arguments)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        if text in command:
            found.append(command)
    return found


def epmd_ports(stack: Path) -> set[int]:
    """Ports of the epmd this stack's cluster started: its command line names its port, and its
    output goes to a log under `stack` (other clusters on the machine, such as the session's
    or another checkout's, have epmds of their own, which come and go meanwhile)."""
    ports = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            output = os.readlink(entry / "fd" / "1")
        except OSError:
            continue
        if (
            argv
            and argv[0].endswith(b"epmd")
            and b"-port" in argv
            and output.startswith(f"{stack}/")
        ):
            ports.add(int(argv[argv.index(b"-port") + 1]))
    return ports


def test_moclo_up_on_the_engine_reaches_the_dashboard_and_stops_clean(
    tmp_path: Path, influxdb: InfluxServer
) -> None:
    stack = tmp_path / "stack"
    dashboard_port = free_port()
    env = {
        "MOCLO_INFLUX_URL": influxdb.url,  # the session's: only the cluster is this test's own
        "MOCLO_INFLUX_DB": f"up_{uuid.uuid4().hex[:8]}",
        "MOCLO_HTTP_LISTEN": "off",
        "MOCLO_SERVE_LISTEN": f"127.0.0.1:{dashboard_port}",
    }
    process = _moclo(
        "up", "--engine", "rabbitmq", "--workers", "2", "--data-dir", str(stack),
        "--devices", "cow_tracker=6", "--interval", "500ms", "--seed", "1", env=env,
    )  # fmt: skip
    output = Output(process)
    try:
        banner = wait_until(
            lambda: output.has("moclo is up"), timeout_s=150, what="moclo up's banner"
        )
        dashboard = f"http://127.0.0.1:{dashboard_port}/"
        assert banner.strip() == f"moclo is up. Dashboard: {dashboard}"
        assert len([line for line in output.lines if "Engine       RabbitMQ" in line]) == 3
        token = (stack / "dashboard-token").read_text().strip()
        signed_in = {"Authorization": f"Bearer {token}"}

        def devices_with_readings() -> set[str]:
            answer = httpx.get(
                f"{dashboard}api/devices", params={"tenant": "demo-farm"}, headers=signed_in
            )
            return {d["device_id"] for d in answer.json()["devices"] if d.get("last")}

        wait_until(
            lambda: len(devices_with_readings()) == 6,
            timeout_s=60,
            what="every simulated cow's readings through the engine in the dashboard's API",
        )
        # Both workers consume: the status line counts what all of them stored.
        wait_until(
            lambda: any(
                "readings stored" in line and "readings stored 0 " not in line
                for line in output.lines
            ),
            timeout_s=30,
            what="a status line with readings stored",
        )
        assert processes_mentioning(str(stack)), "the cluster's nodes run under the data dir"
        assert epmd_ports(stack), "its epmd is found (so that the check below can fail)"
        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert process.wait(90) == 0, output.text()
    finally:
        if process.poll() is None:
            process.kill()
        output.close()
    assert "stopped cleanly" in output.text() and "Traceback" not in output.text()
    assert processes_mentioning(str(stack)) == [], "an Erlang node outlived moclo up"
    assert epmd_ports(stack) == set(), "moclo up left its epmd running"


def test_workers_without_the_engine_is_refused_before_anything_starts(tmp_path: Path) -> None:
    process = _moclo("up", "--workers", "3", "--data-dir", str(tmp_path / "stack"))
    output = Output(process)
    try:
        assert process.wait(60) == 2
    finally:
        output.close()
    assert "--workers needs --engine rabbitmq" in output.text()
    assert not (tmp_path / "stack").exists(), "no server was started"


def test_spreading_a_simulation_over_nodes_wants_one_connection_per_device_and_host_port(
    tmp_path: Path,
) -> None:
    for flags, said in [
        (["--connections", "device", "--spread-over", "r1"], "'r1': write HOST:PORT"),
        (["--spread-over", "r1:1883,r2:1883"], "--spread-over needs --connections device"),
    ]:
        process = _moclo("simulate", "--devices", "cow_tracker=2", *flags)
        output = Output(process)
        try:
            assert process.wait(60) == 2
        finally:
            output.close()
        assert said in output.text(), output.text()
