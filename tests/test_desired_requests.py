"""Two overlapping desired changes by the same person are told apart: each request carries an
id of its own (`request_id`, made by serve or the CLI), which every command-status update about
it echoes, so the 202 of `PUT …/desired` names what will be announced and a wait is answered
with its own change's version, not the other's. Real Mosquitto, InfluxDB, ingest and serve, a
smart meter
that is not connected (a change is `sent` whether or not the device is there)."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from core.settings import Settings
from tests.conftest import RunningIngest, RunningServe
from tests.gateway_helpers import StatusWatch
from tests.helpers import Influx, wait_until
from tests.test_serve_commands import gateway, homes  # noqa: F401 (fixtures)


def test_two_overlapping_changes_by_one_person_are_each_answered_with_their_own(
    gateway: Settings,  # noqa: F811
    homes: RunningIngest,  # noqa: F811
    serve: RunningServe,
    influx: Influx,
) -> None:
    watch = StatusWatch(gateway)
    headers = {"Authorization": f"Bearer {serve.token(['home'], role='operator', name='ana')}"}
    url = f"{serve.url}/api/devices/home/meter-1/desired"
    try:
        # Without a wait: the 202 names the request, and command-status echoes it.
        asked = httpx.put(url, json={"state": {"appliances": {"oven": "on"}}}, headers=headers)
        assert asked.status_code == 202, asked.text
        request_id = asked.json()["request_id"]
        assert "id" not in asked.json()  # no id that nobody will announce
        [sent] = wait_until(
            lambda: [u for u in watch.updates() if u.get("request_id") == request_id],
            what="the update naming the request",
        )
        assert (sent["id"], sent["status"]) == ("meter-1-desired-1", "sent")

        # Two at once, each waited for, each a change whichever comes first: each answer is its
        # own change's version.
        answers: dict[str, dict[str, Any]] = {}

        def want(appliance: str, mode: str) -> None:
            body = {"state": {"appliances": {appliance: mode}}}
            answer = httpx.put(url, json=body, headers=headers, params={"wait": 8}, timeout=20)
            answers[appliance] = answer.json()

        both = [
            threading.Thread(target=want, args=("oven", "off")),
            threading.Thread(target=want, args=("kettle", "standby")),
        ]
        for waiter in both:
            waiter.start()
        for waiter in both:
            waiter.join(20)
        assert len(answers) == 2, answers
        oven, kettle = answers["oven"], answers["kettle"]
        assert {oven["id"], kettle["id"]} == {"meter-1-desired-2", "meter-1-desired-3"}, answers
        assert oven["status"] == kettle["status"] == "sent"
        assert oven["request_id"] != kettle["request_id"]
        rows = influx.query(
            'SELECT "id", "to" FROM "moclo_commands" WHERE "kind" = \'desired\' '
            "AND \"status\" = 'sent'"
        )
        wanted = {row["id"]: row["to"] for row in rows}
        assert wanted[oven["id"]] == '{"appliances":{"oven":"off"}}', (answers, wanted)
        assert wanted[kettle["id"]] == '{"appliances":{"kettle":"standby"}}', (answers, wanted)
    finally:
        watch.close()
