"""One connection per login (`use_username_as_clientid`): what a person sees when a second
client logs in with the same login as a running `moclo alerts --follow`."""

from __future__ import annotations

import pytest

from moclo.settings import Settings
from tests.helpers import wait_until
from tests.test_alerts_cli import Process, connection
from tests.test_broker_access import T1, Secured, secured  # noqa: F401 (a fixture)


def test_a_follow_pushed_off_by_the_same_login_says_why(
    secured: Secured,  # noqa: F811
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two `moclo alerts --follow` as the same operator: the broker closes the first when the
    second logs in. The first must not only say it "lost the broker" (which it did not: the
    second one is connected) but name the login that took its place."""
    user, password = secured.creds("operator farm-one")
    monkeypatch.setenv("MOCLO_MQTT_USERNAME", user)
    monkeypatch.setenv("MOCLO_MQTT_PASSWORD", password)
    live = settings.model_copy(update={"mqtt_url": secured.broker.url})
    args = ("alerts", "--follow", "--tenant", T1, *connection(live))
    first = Process(*args)
    second = None
    try:
        wait_until(lambda: any("watching" in line for line in first.err), what="first follows")
        second = Process(*args)
        wait_until(lambda: any("watching" in line for line in second.err), what="second follows")
        assert first.wait() == 1
        said = "\n".join(first.err)
        assert f"another client logged in as {user!r}" in said, said
        assert "one connection per login" in said, said
        assert second.process.poll() is None  # the newer one keeps its connection
    finally:
        first.close()
        if second is not None:
            second.close()
