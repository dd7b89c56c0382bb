"""`moclo notify test PERSON` and `moclo notify run` as a user runs them: which channel took
the test message (by label, never by URL), the exit codes, and a broken notify file."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.helpers import moclo
from tests.receivers import HttpReceiver, SmtpReceiver

TOKEN = "tok-9f8e7d"


def _file(tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver) -> Path:
    path = tmp_path / "notify.toml"
    path.write_text(
        f"""
[[people]]
name = "farmer"
tenants = ["farm-7"]
channels = [
  {{ url = "json://{http.base}/phone?token={TOKEN}", label = "farmer's phone" }},
  {{ url = "{smtp.url("farmer@example.org")}", label = "farmer's mail" }},
  {{ url = "json://{http.base}/broken?token={TOKEN}", label = "old pager" }},
]

[[people]]
name = "vet"
tenants = ["farm-7"]
channels = [ {{ url = "json://{http.base}/vet", label = "vet's phone" }} ]

[[routes]]
name = "all"
tenant = "farm-7"
notify = ["farmer", "vet"]
"""
    )
    return path


def test_notify_test_says_which_channels_worked_and_fails_if_one_did_not(
    tmp_path: Path, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver
) -> None:
    path = _file(tmp_path, http_receiver, smtp_receiver)
    http_receiver.fail("/broken", 410)
    result = moclo("notify", "test", "farmer", "--file", str(path))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "ok      farmer's phone"
    assert lines[1] == "ok      farmer's mail"
    assert lines[2].startswith("FAILED  old pager: json refused it")
    assert "2 of 3 channel(s) of farmer took the test message" in result.stderr
    assert TOKEN not in result.stdout + result.stderr, "a channel's token was shown"
    (phone,) = http_receiver.wait_for("/phone")
    assert "test from moclo to farmer" in phone.json()["message"]
    smtp_receiver.wait_for(lambda m: m.recipients == ("farmer@example.org",))


def test_notify_test_exits_0_when_every_channel_took_it(
    tmp_path: Path, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver
) -> None:
    path = _file(tmp_path, http_receiver, smtp_receiver)
    result = moclo("notify", "test", "vet", "--file", str(path), "--json")
    assert result.returncode == 0, result.stderr
    document = orjson.loads(result.stdout)
    assert document["failed"] == 0
    assert [c["channel"] for c in document["channels"]] == ["vet's phone"]
    http_receiver.wait_for("/vet")


def test_notify_test_of_an_unknown_person_or_a_broken_file_exits_2(
    tmp_path: Path, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver
) -> None:
    path = _file(tmp_path, http_receiver, smtp_receiver)
    result = moclo("notify", "test", "farmr", "--file", str(path))
    assert result.returncode == 2
    assert "no person 'farmr'" in result.stderr and "farmer, vet" in result.stderr
    path.write_text(path.read_text().replace('tenants = ["farm-7"]', "tenants = 7", 1))
    for command in (["test", "farmer"], ["run"]):
        result = moclo("notify", *command, "--file", str(path))
        assert result.returncode == 2, result.stderr
        assert f"{path}:4:" in result.stderr and "Traceback" not in result.stderr
    assert http_receiver.received == [], "nothing is sent from a file with mistakes"
