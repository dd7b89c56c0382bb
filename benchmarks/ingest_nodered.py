"""Contender (d) of the ingest benchmark: Node-RED with node-red-contrib-influxdb, the usual
low-code way to put MQTT telemetry into InfluxDB.

Both are installed from npm, at pinned versions, into a cache folder outside the repository
(`~/.cache/moclo-benchmarks/node-red`, or under $XDG_CACHE_HOME), once; later runs reuse it.
Node-RED 5 needs Node.js 22.9 or later, so with Node.js 20 the pin is the last 4.x release.

The flow, written here as JSON: mqtt in (MQTT 3.1.1, the Node-RED default; QoS 1; clean session
off, a fixed client id and "automatically unsubscribe when disconnecting" off, so the broker
keeps a backlog for it) → json → a function that turns
a reading, or each reading of an array, into a point like ingest's {measurement: device type,
tags: {tenant, device_id}, fields: the reading without ts, timestamp: ts in ms} → join (5,000
points, or what came within 200 ms of the first: the tail is flushed) → influx batch (InfluxDB
1.x config, precision ms). Node-RED runs headless: no editor, no admin API, no HTTP server.

What node-red-contrib-influxdb does with a 1.x config, as its README says: every JavaScript
number is written as a float, so `seq` and the integer fields are floats in Node-RED's
database (same measurement, tags, field names and timestamps; written into ingest's database
they would be a field type conflict). Its batch node starts a write for each batch as it comes,
without waiting for the previous one, and mqtt.js acknowledges a message when it arrives.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.settings import Settings

NODE_RED = "4.1.15"
CONTRIB_INFLUXDB = "0.7.0"
BATCH_POINTS = 5_000
BATCH_WAIT_S = 0.2

# One point per reading, shaped like ingest's; a message may carry one reading or an array.
FUNCTION = """\
const parts = msg.topic.split("/");
const n = parts.length;
const measurement = parts[n - 3];
const tags = {tenant: parts[n - 4], device_id: parts[n - 2]};
const readings = Array.isArray(msg.payload) ? msg.payload : [msg.payload];
const out = [];
for (const reading of readings) {
    const fields = {};
    for (const key in reading) {
        if (key !== "ts") fields[key] = reading[key];
    }
    const ts = reading.ts;
    const timestamp = typeof ts === "number" ? Math.round(ts * 1000) : new Date(ts);
    out.push({payload: {measurement, tags, fields, timestamp}});
}
return [out];
"""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "moclo-benchmarks" / "node-red"


def _version(package_json: Path) -> str | None:
    try:
        return str(json.loads(package_json.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def installed(where: Path | None = None) -> bool:
    """Whether the pinned versions are in the cache."""
    modules = (where or cache_dir()) / "node_modules"
    return (
        _version(modules / "node-red" / "package.json") == NODE_RED
        and _version(modules / "node-red-contrib-influxdb" / "package.json") == CONTRIB_INFLUXDB
    )


def install(progress: Callable[[str], None]) -> float | None:
    """Installs the pinned versions into the cache unless they are there; the seconds it took,
    or None if nothing was installed. Installs beside the cache and renames, so an interrupted
    install leaves no half-filled cache."""
    target = cache_dir()
    if installed(target):
        return None
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: Node-RED needs Node.js 18.5+ and npm")
    target.parent.mkdir(parents=True, exist_ok=True)
    packages = [f"node-red@{NODE_RED}", f"node-red-contrib-influxdb@{CONTRIB_INFLUXDB}"]
    progress(f"installing {' and '.join(packages)} from npm into {target}…")
    began = time.monotonic()
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix="node-red-installing-"))
    try:
        (staging / "package.json").write_text(
            json.dumps({"name": "moclo-benchmark-node-red", "private": True})
        )
        # npm's own progress lines go to our stderr.
        subprocess.run(
            [npm, "install", "--save-exact", "--no-audit", "--no-fund", *packages],
            cwd=staging,
            stdout=sys.stderr,
            check=True,
        )
        if not installed(staging):
            raise RuntimeError(f"npm did not install {' and '.join(packages)} in {staging}")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already if renamed
    seconds = time.monotonic() - began
    progress(f"  installed in {seconds:.0f} s")
    return seconds


def flow(settings: Settings, client_id: str) -> list[dict[str, Any]]:
    broker = settings.mqtt_url.removeprefix("mqtt://")
    host, port = broker.rsplit(":", 1)
    influx_host, influx_port = settings.influx_url.removeprefix("http://").rsplit(":", 1)
    tab = "bench"
    return [
        {"id": tab, "type": "tab", "label": "ingest benchmark"},
        {
            "id": "broker",
            "type": "mqtt-broker",
            "broker": host,
            "port": port,
            "clientid": client_id,
            "autoConnect": True,
            "usetls": False,
            "protocolVersion": "4",
            "keepalive": "60",
            "cleansession": False,
            # By default Node-RED unsubscribes when it stops, and the broker then queues
            # nothing for the session: the backlog would be lost.
            "autoUnsubscribe": False,
        },
        {
            "id": "in",
            "x": 100,
            "y": 100,  # a node without a position is taken for a config node
            "type": "mqtt in",
            "z": tab,
            "topic": f"{settings.topic_prefix}/+/+/+/telemetry",
            "qos": "1",
            "datatype": "utf8",
            "broker": "broker",
            "nl": False,
            "rap": True,
            "rh": 0,
            "inputs": 0,
            "wires": [["json"]],
        },
        {
            "id": "json",
            "x": 250,
            "y": 100,
            "type": "json",
            "z": tab,
            "property": "payload",
            "action": "obj",
            "pretty": False,
            "wires": [["points"]],
        },
        {
            "id": "points",
            "x": 400,
            "y": 100,
            "type": "function",
            "z": tab,
            "func": FUNCTION,
            "outputs": 1,
            "wires": [["join"]],
        },
        {
            "id": "join",
            "x": 550,
            "y": 100,
            "type": "join",
            "z": tab,
            "mode": "custom",
            "build": "array",
            "property": "payload",
            "propertyType": "msg",
            "count": str(BATCH_POINTS),
            "timeout": str(BATCH_WAIT_S),
            "accumulate": False,
            "wires": [["influx"]],
        },
        {
            "id": "influx",
            "x": 700,
            "y": 100,
            "type": "influxdb batch",
            "z": tab,
            "influxdb": "database",
            "precision": "ms",
            "retentionPolicy": "",
            "wires": [],
        },
        {
            "id": "database",
            "type": "influxdb",
            "hostname": influx_host,
            "port": influx_port,
            "protocol": "http",
            "database": settings.influx_db,
            "usetls": False,
            "influxdbVersion": "1.x",
        },
    ]


def command(settings: Settings, client_id: str, workdir: Path) -> list[str]:
    """Writes the flow and settings under `workdir`; the command that runs Node-RED on them."""
    user_dir = workdir / "node-red"
    user_dir.mkdir(parents=True, exist_ok=True)
    (user_dir / "flows.json").write_text(json.dumps(flow(settings, client_id), indent=1))
    settings_js = user_dir / "settings.js"
    settings_js.write_text(
        "module.exports = "
        + json.dumps(
            {
                "flowFile": "flows.json",
                "credentialSecret": False,
                "httpAdminRoot": False,  # no editor, no admin API: no HTTP server at all
                "httpNodeRoot": False,
                "logging": {"console": {"level": "warn", "metrics": False, "audit": False}},
                "telemetry": {"enabled": False},  # no update check against the internet
                "diagnostics": {"enabled": False},
                "externalModules": {"autoInstall": False},
            },
            indent=1,
        )
        + ";\n"
    )
    node = shutil.which("node") or "node"
    red = cache_dir() / "node_modules" / "node-red" / "red.js"
    return [node, str(red), "--settings", str(settings_js), "--userDir", str(user_dir)]
