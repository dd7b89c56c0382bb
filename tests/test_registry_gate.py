"""ingest/registry_gate.py on its own: which devices pass, and the `moclo_unregistered` notes
of flag mode (the end-to-end behaviour is in test_registry.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from access.registry import Registry
from core.settings import Settings
from devices.topics import telemetry_topic
from ingest.decode import Decoded, Decoder
from ingest.registry_gate import RegistryGate
from storage.schema import UNREGISTERED
from tests.helpers import cow_json


def _gate(tmp_path: Path, mode: str) -> RegistryGate:
    return RegistryGate(Settings(registry=str(tmp_path / "r.sqlite"), unregistered=mode))


def test_off_reads_no_registry(tmp_path: Path) -> None:
    gate = _gate(tmp_path, "off")
    assert gate.registered is None and not gate.flags
    asyncio.run(gate.load())  # says so, reads nothing
    gate.close()


def test_flag_notes_each_unregistered_device_once_with_rising_stamps(tmp_path: Path) -> None:
    Registry(tmp_path / "r.sqlite").add_device("farm", "cow_tracker", "cow-1")
    gate = _gate(tmp_path, "flag")
    assert gate.flags and gate.registered is not None
    asyncio.run(gate.load())
    assert len(gate.registered) == 1
    decoder = Decoder("p", registered=gate.registered, unregistered="flag")
    now = time.time_ns()
    out = Decoded()
    for device in ("cow-1", "cow-2", "cow-3", "cow-2"):
        topic = telemetry_topic("p", "farm", "cow_tracker", device)
        decoder.decode(topic, cow_json(int(now / 1e9), 1), now, out)  # one arrival time
    assert len(out.readings) == 4  # flagged, not rejected
    lines = gate.unregistered_lines(decoder)
    assert [line.split(" ")[0] for line in lines] == [
        f"{UNREGISTERED.name},device_type=cow_tracker,tenant=farm"
    ] * 2
    assert 'device_id="cow-2"' in lines[0] and 'device_id="cow-3"' in lines[1]
    stamps = [int(line.rsplit(" ", 1)[1]) for line in lines]
    assert stamps == [now, now + 1]  # never two points on one series and stamp
    assert gate.unregistered_lines(decoder) == []  # each device noted once
    gate.close()
