"""Real receivers for the notification tests: an SMTP server (aiosmtpd) and an HTTP server,
each on a free loopback port, recording what arrives. Nothing is mocked: Apprise and the
webhook talk to them over real sockets.

The HTTP receiver can be told to answer with an error status or to hang (hold each request
until released or a deadline passes), which is how the tests make a channel dead.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from moclo.stack import free_port
from tests.helpers import wait_until


@dataclass(frozen=True, slots=True)
class Mail:
    sender: str
    recipients: tuple[str, ...]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def text(self) -> str:
        """The plain-text body (Apprise sends text, or HTML with a text alternative)."""
        part = self.message.get_body(preferencelist=("plain", "html"))
        return "" if part is None else str(part.get_content())


class _MailHandler:
    def __init__(self, received: list[Mail], lock: threading.Lock) -> None:
        self._received = received
        self._lock = lock

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        mail = Mail(str(envelope.mail_from), tuple(envelope.rcpt_tos), message)
        with self._lock:
            self._received.append(mail)
        return "250 Message accepted for delivery"


class SmtpReceiver:
    """A plain SMTP server (no TLS, no login) on 127.0.0.1; `mail` is what it accepted."""

    def __init__(self) -> None:
        self.port = free_port()
        self._lock = threading.Lock()
        self._mail: list[Mail] = []
        self._controller = Controller(
            _MailHandler(self._mail, self._lock), hostname="127.0.0.1", port=self.port
        )

    def start(self) -> SmtpReceiver:
        self._controller.start()  # returns once the server answers
        return self

    def stop(self) -> None:
        self._controller.stop()

    @property
    def mail(self) -> list[Mail]:
        with self._lock:
            return list(self._mail)

    def url(self, to: str, *, sender: str = "moclo@example.org") -> str:
        """The Apprise URL that reaches this server: plain SMTP (`mode=insecure`), no login."""
        user, _, domain = sender.partition("@")
        return (
            f"mailto://{user}@{domain}?smtp=127.0.0.1&port={self.port}&mode=insecure"
            f"&from={sender}&to={to}"
        )

    def wait_for(
        self, predicate: Callable[[Mail], bool], *, count: int = 1, timeout_s: float = 20.0
    ) -> list[Mail]:
        """The messages matching `predicate`, once there are at least `count` of them."""

        def matching() -> list[Mail]:
            found = [m for m in self.mail if predicate(m)]
            return found if len(found) >= count else []

        return wait_until(
            matching,
            timeout_s=timeout_s,
            what=f"{count} matching mail(s) at the SMTP receiver",
        )


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float = 0.0  # time.time() when it was answered

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class _Behaviour:
    status: int = 200
    hang: threading.Event | None = None  # set: answer; unset: hold the request
    hang_limit_s: float = 30.0


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    received: list[Request] = field(default_factory=list)
    behaviour: dict[str, _Behaviour] = field(default_factory=dict)  # by path prefix
    arrived: int = 0  # requests that reached a handler, answered or not


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:  # http.server's naming
        self._record()

    def do_PUT(self) -> None:
        self._record()

    def do_GET(self) -> None:
        self._record()

    def _record(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        behaviour = state.behaviour.get("", _Behaviour())
        for prefix, candidate in state.behaviour.items():
            if prefix and self.path.startswith(prefix):
                behaviour = candidate
        with state.lock:
            state.arrived += 1
        if behaviour.hang is not None:
            # A dead channel: the connection is open and nothing comes back.
            behaviour.hang.wait(behaviour.hang_limit_s)
        if 200 <= behaviour.status < 300:
            with state.lock:
                request = Request(self.command, self.path, headers, body, time.time())
                state.received.append(request)
        self.send_response(behaviour.status)
        self.send_header("Content-Type", "application/json")
        answer = b'{"ok": true}' if behaviour.status < 300 else b'{"error": "told to fail"}'
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test reads what arrived, not an access log


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


class HttpReceiver:
    """An HTTP server on 127.0.0.1 that records every request it answered with 2xx (`received`)
    and can be told to fail (`fail(path, status)`) or hang (`hang(path)`) per path prefix."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server = _Server(("127.0.0.1", self.port), _Handler)
        self._server.state = _State()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"http-receiver-{self.port}", daemon=True
        )
        self._releases: list[threading.Event] = []

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> HttpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        for release in self._releases:
            release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    @property
    def received(self) -> list[Request]:
        with self._server.state.lock:
            return list(self._server.state.received)

    @property
    def arrived(self) -> int:
        """Requests that reached the server, including failed and hanging ones."""
        with self._server.state.lock:
            return self._server.state.arrived

    def on(self, path: str) -> list[Request]:
        return [r for r in self.received if r.path.split("?", 1)[0] == path]

    def fail(self, path: str, status: int) -> None:
        self._server.state.behaviour[path] = _Behaviour(status=status)

    def hang(self, path: str, *, limit_s: float = 30.0) -> threading.Event:
        """Requests under `path` get no answer until the returned event is set (or `limit_s`)."""
        release = threading.Event()
        self._releases.append(release)
        self._server.state.behaviour[path] = _Behaviour(hang=release, hang_limit_s=limit_s)
        return release

    def heal(self, path: str) -> None:
        behaviour = self._server.state.behaviour.pop(path, None)
        if behaviour is not None and behaviour.hang is not None:
            behaviour.hang.set()

    def wait_for(self, path: str, *, count: int = 1, timeout_s: float = 20.0) -> list[Request]:
        """The requests answered on `path`, once there are at least `count` of them."""
        return wait_until(
            lambda: found if len(found := self.on(path)) >= count else [],
            timeout_s=timeout_s,
            what=f"{count} request(s) on {path} at the HTTP receiver",
        )
