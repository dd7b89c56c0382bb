"""Who is on call (`GET /api/oncall`) and the one-tap acknowledgement link (`/ack/{token}`),
against a real broker, database, ingest and `moclo serve` with a notify file and a link secret.

The link is tried from the attacker's side: forged, altered to name another alert, expired,
or made for someone who left the notify file or does not serve the alert's tenant; each is
refused with its reason logged, and the alert stays raised. The positive control beside them:
the genuine link acknowledges its own alert, as the person's account, and no other. GET never
acts (mail scanners fetch links)."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from core.settings import Settings
from notify.links import make_ack_token
from tests.conftest import RunningIngest, RunningServe
from tests.helpers import wait_until
from tests.test_serve import cow_history

SECRET = b"a link secret of at least 16 characters"
NOTIFY_FILE = """
[[people]]
name = "farmer-jo"
tenants = ["farm"]
account = "jo"
channels = [ { url_env = "JO_NTFY_URL", label = "jo's phone" } ]

[[people]]
name = "vet-ana"
tenants = ["farm"]
channels = [ { url = "json://localhost:9/ana", label = "ana" } ]

[[people]]
name = "dr-lee"
tenants = ["clinic"]
channels = [ { url = "json://localhost:9/lee" } ]

[[people]]
name = "dr-kim"
tenants = ["clinic"]
channels = [ { url = "json://localhost:9/kim" } ]

# The first handoff is far ahead: until then the first person is on call.
[[rotations]]
name = "farm-week"
tenant = "farm"
people = ["farmer-jo", "vet-ana"]
shift = "7d"
handoff = "2100-01-04T08:00"
time_zone = "Europe/Amsterdam"

# Daily turns since 2026, and dr-kim standing in for years.
[[rotations]]
name = "cardiology"
tenant = "clinic"
people = ["dr-lee", "dr-kim"]
shift = "1d"
handoff = "2026-01-05T08:00"
overrides = [ { person = "dr-kim", from = "2000-01-01T00:00", to = "2099-12-31T00:00" } ]

[[rotations]]
name = "clinic-nights"
tenant = "clinic"
people = ["dr-lee", "dr-kim"]
shift = "1d"
handoff = "2026-01-05T20:00"
"""


@pytest.fixture
def notified(settings: Settings, tmp_path: Path) -> Iterator[RunningServe]:
    """`moclo serve` with the notify file above and a link secret."""
    path = tmp_path / "notify.toml"
    path.write_text(NOTIFY_FILE)
    update = {
        "serve_listen": "127.0.0.1:0",
        "registry": str(tmp_path / "registry.sqlite"),
        "notify_file": str(path),
        "notify_link_secret": SecretStr(SECRET.decode()),
    }
    with RunningServe(settings.model_copy(update=update)) as running:
        yield running


def fever(settings: Settings, serve: RunningServe, tenant: str, cow: str) -> str:
    """`cow` of `tenant` raises `fever` through ingest; its alert id once stored."""
    cow_history(settings, tenant, cow, [38.6] * 4 + [40.1] * 3)
    return str(wait_until(lambda: alert_of(serve, tenant, cow), what=f"{cow}'s fever")["id"])


def alert_of(serve: RunningServe, tenant: str, cow: str) -> dict[str, str] | None:
    with serve.client(serve.admin_token) as admin:
        found = admin.get("/api/alerts", params={"tenant": tenant, "device": cow}).json()
    return next(iter(found["alerts"]), None)


def link(alert_id: str, person: str, *, secret: bytes = SECRET, in_s: float = 3600) -> str:
    return make_ack_token(secret, alert_id, person, expires=int(time.time() + in_s))


def post(serve: RunningServe, token: str) -> httpx.Response:
    # As a browser sends the confirm page's form under `Referrer-Policy: no-referrer`.
    return httpx.post(f"{serve.url}/ack/{token}", headers={"Origin": "null"}, timeout=20)


def get(serve: RunningServe, token: str) -> httpx.Response:
    return httpx.get(f"{serve.url}/ack/{token}", timeout=10)


def test_on_call_is_told_per_tenant_of_the_token(notified: RunningServe) -> None:
    farm = notified.token(["farm"], role="viewer")
    with notified.client(farm) as client:
        mine = client.get("/api/oncall")
        theirs = client.get("/api/oncall", params={"tenant": "clinic"})
    assert mine.status_code == 200, mine.text
    assert [(r["rotation"], r["on_call"], r["next"], r["override"], r["until"])
            for r in mine.json()["rotations"]] == [
        ("farm-week", "farmer-jo", ["vet-ana"], False, None)]  # fmt: skip
    # The attacker's side: the farm's token asking for the clinic's rotations.
    assert theirs.status_code == 403
    assert "dr-" not in theirs.text and "cardiology" not in theirs.text

    with notified.client(notified.token(["clinic"], role="viewer")) as client:
        clinic = client.get("/api/oncall").json()["rotations"]
    assert [(r["rotation"], r["on_call"], r["override"]) for r in clinic] == [
        ("cardiology", "dr-kim", True),  # standing in
        ("clinic-nights", clinic[1]["on_call"], False),
    ]
    assert clinic[1]["on_call"] in ("dr-lee", "dr-kim") and clinic[1]["next"] != [
        clinic[1]["on_call"]
    ]
    # A daily rotation passes on within a day.
    until = clinic[1]["until"]
    assert until is not None and 0 < _epoch(until) - time.time() <= 86_400
    with notified.client(notified.admin_token) as client:
        every = client.get("/api/oncall")
    assert [r["tenant"] for r in every.json()["rotations"]] == ["clinic", "clinic", "farm"]
    assert "json://" not in every.text and "jo's phone" not in every.text  # never how


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def test_without_a_notify_file_nobody_is_on_call(serve: RunningServe) -> None:
    with serve.client(serve.admin_token) as client:
        answer = client.get("/api/oncall")
    assert answer.status_code == 200 and answer.json()["rotations"] == []


def test_a_notify_file_with_mistakes_says_to_check_it(notified: RunningServe) -> None:
    path = Path(str(notified.settings.notify_file))
    path.write_text(NOTIFY_FILE.replace('shift = "7d"', 'shift = "a week"'))
    with notified.client(notified.admin_token) as client:
        broken = client.get("/api/oncall")
    assert broken.status_code == 503
    assert f"moclo notify check {path}" in broken.json()["error"]
    path.write_text(NOTIFY_FILE)  # mended: read again without a restart
    with notified.client(notified.admin_token) as client:
        assert client.get("/api/oncall").status_code == 200


def test_the_link_shows_a_page_on_get_and_acknowledges_as_the_account_on_post(
    settings: Settings, ingest: RunningIngest, notified: RunningServe
) -> None:
    alert_id = fever(settings, notified, "farm", "cow-1")
    token = link(alert_id, "farmer-jo")
    page = get(notified, token)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    for shown in (
        "fever",
        "farm/cow-1",
        "Acknowledge as farmer-jo",
        "recorded as jo",
        'method="post"',
    ):
        assert shown in page.text
    assert "<script" not in page.text
    page_again = get(notified, token)  # a mail scanner fetching it twice
    assert page_again.status_code == 200
    assert (alert_of(notified, "farm", "cow-1") or {})["state"] == "raised"  # GET never acts

    done = post(notified, token)
    assert done.status_code == 200, done.text
    assert "Acknowledged as <b>farmer-jo</b> (recorded as jo)" in done.text
    acknowledged = alert_of(notified, "farm", "cow-1") or {}
    assert (acknowledged["state"], acknowledged["acknowledged_by"]) == ("acknowledged", "jo")
    assert "Already acknowledged by jo" in get(notified, token).text
    assert post(notified, token).status_code == 409  # nothing left to do, and it says so


def test_a_link_cannot_be_forged_altered_stretched_or_turned_on_another_alert(
    settings: Settings,
    ingest: RunningIngest,
    notified: RunningServe,
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = fever(settings, notified, "farm", "cow-1")
    other = fever(settings, notified, "farm", "cow-2")
    clinics = fever(settings, notified, "clinic", "cow-9")
    genuine = link(target, "farmer-jo")
    payload, signature = genuine.split(".")
    swapped = (
        base64.urlsafe_b64encode(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).replace(
                target.encode(), other.encode()
            )
        )
        .rstrip(b"=")
        .decode()
    )
    attacks = {
        "forged": (link(target, "farmer-jo", secret=b"the attacker's own secret key"), 403),
        "altered to another alert": (f"{swapped}.{signature}", 403),
        "expired": (link(target, "farmer-jo", in_s=-1), 403),
        "someone who left": (link(target, "vet-who-left"), 403),
        "another tenant's doctor": (link(target, "dr-lee"), 403),
        "a farmer on the clinic's alert": (link(clinics, "farmer-jo"), 403),
        "not a link at all": ("not-a-token", 403),
    }
    caplog.set_level(logging.WARNING, logger="moclo.serve")
    for what, (token, status) in attacks.items():
        assert get(notified, token).status_code == status, what
        refused = post(notified, token)
        assert refused.status_code == status, what
        assert "This link cannot be used" in refused.text, what
    assert "has expired" in post(notified, attacks["expired"][0]).text
    assert "no longer in the notify file" in post(notified, attacks["someone who left"][0]).text
    for alert_id, tenant, cow in ((target, "farm", "cow-1"), (other, "farm", "cow-2"),
                                  (clinics, "clinic", "cow-9")):  # fmt: skip
        assert (alert_of(notified, tenant, cow) or {})["state"] == "raised", alert_id
    refusals = [r.getMessage() for r in caplog.records if "link was refused" in r.getMessage()]
    assert len(refusals) >= 2 * len(attacks)
    assert not any(token in line for line in refusals for token, _ in attacks.values())

    # The positive control: the genuine link acknowledges its own alert, and only that one.
    assert post(notified, genuine).status_code == 200
    assert (alert_of(notified, "farm", "cow-1") or {})["acknowledged_by"] == "jo"
    assert (alert_of(notified, "farm", "cow-2") or {})["state"] == "raised"


def test_without_a_link_secret_links_are_off(serve: RunningServe) -> None:
    token = link("0123456789ab", "farmer-jo")
    answer = httpx.get(f"{serve.url}/ack/{token}", timeout=10)
    assert answer.status_code == 404
    assert "links are off" in answer.text
