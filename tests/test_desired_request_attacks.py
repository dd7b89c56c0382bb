"""A desired change's `request_id` is read by everyone of the tenant (command-status echoes it),
so it is no secret: another account of the tenant asking under the same id must not answer a
person's wait for theirs. Real Mosquitto, InfluxDB, ingest and serve; a smart meter that is
not connected, so the victim's change stays `sent` while the attacker acts."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from core.settings import Settings
from tests.conftest import RunningIngest, RunningServe
from tests.gateway_helpers import StatusWatch, ask, registry_with
from tests.helpers import wait_until
from tests.test_serve_commands import gateway, homes  # noqa: F401 (fixtures)


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
