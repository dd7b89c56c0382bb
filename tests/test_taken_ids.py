"""The ids a person's wait follows are no secret: a desired change's `request_id` is echoed on
command-status to the whole tenant, and a command's id may be the client's own (guessable).
Another account of the tenant asking under the same id must not answer a person's wait for
theirs. Real Mosquitto, InfluxDB, ingest and serve; the victim's device is not connected, or
executes only what it is sent."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from core.settings import Settings
from tests.conftest import RunningIngest, RunningServe
from tests.gateway_helpers import ScriptedDevice, StatusWatch, ask, registry_with
from tests.helpers import Subscriber, wait_until
from tests.test_serve_commands import gateway, homes, requests  # noqa: F401 (fixtures)


@pytest.fixture
def mallory(gateway: Settings) -> str:  # noqa: F811
    """An operator of the same tenant, who reads command-status as every account there does."""
    registry_with(gateway, [], [("operator", "mallory", "home")])
    return "mallory"


def test_another_accounts_request_under_my_request_id_does_not_answer_my_wait(
    mallory: str,
    gateway: Settings,  # noqa: F811
    homes: RunningIngest,  # noqa: F811
    serve: RunningServe,
) -> None:
    watch = StatusWatch(gateway)
    headers = {"Authorization": f"Bearer {serve.token(['home'], role='operator', name='ana')}"}
    url = f"{serve.url}/api/devices/home/meter-1/desired"
    answers: list[httpx.Response] = []

    def ana_waits() -> None:
        body = {"state": {"appliances": {"oven": "on"}}}
        answers.append(httpx.put(url, json=body, headers=headers, params={"wait": 6}, timeout=30))

    waiter = threading.Thread(target=ana_waits)
    try:
        waiter.start()
        [sent] = wait_until(
            lambda: [u for u in watch.updates() if u["status"] == "sent" and u.get("request_id")],
            what="ana's change sent, its request id on command-status",
        )
        stolen = sent["request_id"]
        # Mallory asks under ana's id for something ingest refuses (a final status).
        ask(gateway, "home", mallory, {"device": "meter-1", "state": {}, "request_id": stolen},
            desired=True)  # fmt: skip

        def refused() -> list[dict[str, Any]]:
            return [u for u in watch.updates() if u["status"] == "refused"]

        # Positive control: ingest refused mallory's request and told her under that id.
        [refusal] = wait_until(refused, what="mallory's request refused")
        assert (refusal["request_id"], refusal["issuer"]) == (stolen, "mallory")
        waiter.join(30)
        [answer] = answers
        # Ana's wait is answered with her own change, still `sent` (the meter is away).
        assert answer.status_code == 202, answer.text
        assert (answer.json()["status"], answer.json()["id"]) == ("sent", sent["id"])
        assert answer.json()["issuer"] == "ana"
    finally:
        waiter.join(30)
        watch.close()


def test_another_accounts_command_under_my_id_does_not_answer_my_wait(
    mallory: str,
    gateway: Settings,  # noqa: F811
    homes: RunningIngest,  # noqa: F811
    serve: RunningServe,
    requests: Subscriber,  # noqa: F811
) -> None:
    """A client may choose its command's id (to retry safely), and a guessable one can be
    taken first: ingest then refuses the second asker's request, and mallory's own updates
    under that id must not answer ana's wait as if they were hers."""
    car = ScriptedDevice(gateway, "home", "car", "car-1").connect()
    watch = StatusWatch(gateway)
    headers = {"Authorization": f"Bearer {serve.token(['home'], role='operator', name='ana')}"}
    url = f"{serve.url}/api/devices/home/car-1/commands"
    unlock = {"id": "morning-lock", "device": "car-1", "name": "unlock"}
    answers: list[httpx.Response] = []

    def ana_waits() -> None:
        body = {"name": "lock", "id": "morning-lock"}
        answers.append(httpx.post(url, json=body, headers=headers, params={"wait": 4}, timeout=30))

    waiter = threading.Thread(target=ana_waits)
    try:
        ask(gateway, "home", mallory, unlock)  # mallory takes the id first: an unlock
        watch.wait_for("morning-lock", "succeeded")
        waiter.start()
        wait_until(
            lambda: [m for m in requests.messages if b'"by":"ana"' in m.payload],
            what="ana's request on the broker, her wait open",
        )
        ask(gateway, "home", mallory, unlock)  # asked again: its status announced again
        wait_until(lambda: watch.statuses("morning-lock").count("succeeded") == 2, what="again")
        waiter.join(30)
        [answer] = answers
        # Not the unlock's "succeeded": ingest sent ana's lock nowhere, and says nothing of it.
        assert answer.status_code == 504, answer.text
        assert [c["name"] for c in car.commands] == ["unlock"]
    finally:
        waiter.join(30)
        watch.close()
        car.disconnect()
