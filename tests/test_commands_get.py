"""`commands/get` is answered at once, then at most once per window per device: a device that
asks twenty times in a burst gets each pending command at most twice (the first answer, and
one when the window ends), and still gets every one. Real Mosquitto and InfluxDB, a real
ingest, a scripted device that lost its session (a clean one, as after a broker's restart)."""

from __future__ import annotations

import uuid

from core.settings import Settings
from ingest.downlink.base import COMMANDS_GET_EVERY_S
from ingest.options import IngestOptions
from tests.conftest import RunningIngest
from tests.gateway_helpers import ScriptedDevice, StatusWatch, ask, registry_with
from tests.helpers import wait_until

HOME = "home"
OPTIONS = IngestOptions(linger_s=0.02)


def test_a_burst_of_asks_gets_each_pending_command_at_most_twice_and_all_of_them(
    settings: Settings,
) -> None:
    registry_with(settings, [(HOME, "car", "car-1")], [("operator", "olga", HOME)])
    watch = StatusWatch(settings)
    try:
        with RunningIngest(settings, OPTIONS):
            ids = [uuid.uuid4().hex[:12] for _ in range(3)]
            for command_id, name in zip(ids, ("lock", "flash_lights", "unlock"), strict=True):
                ask(settings, HOME, "olga", {"id": command_id, "device": "car-1", "name": name})
            for command_id in ids:  # sent while the car was away; its session is gone
                watch.wait_for(command_id, "sent")
            car = ScriptedDevice(settings, HOME, "car", "car-1", answer=None)
            car.connect(clean=True)
            try:
                for _ in range(20):
                    car.ask_for_commands()
                # The first ask is answered at once; the other nineteen, once, when the
                # window ends.
                wait_until(
                    lambda: all(car.received(i) == 2 for i in ids),
                    timeout_s=COMMANDS_GET_EVERY_S + 10,
                    what="each pending command twice",
                )
                # A later ask, a window on: answered once more, and the burst added nothing.
                car.ask_for_commands()
                wait_until(
                    lambda: all(car.received(i) >= 3 for i in ids),
                    timeout_s=COMMANDS_GET_EVERY_S + 10,
                    what="the next window's answer",
                )
                assert [car.received(i) for i in ids] == [3, 3, 3]
            finally:
                car.disconnect()
    finally:
        watch.close()
