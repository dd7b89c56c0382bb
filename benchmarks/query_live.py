"""Section 3 of the read-side benchmark: from the reading that raises an alert to the alert in
the dashboard's live feed, on a machine that is not idle.

Mosquitto and InfluxDB are the benchmark's own; `moclo ingest` (its defaults: at-least-once,
the default rules; no registry check, as the simulated devices are not registered), `moclo
serve` and `moclo simulate` (thermostats of tenant `homes`, a steady background load) are child
processes; the dashboard (`/`, all tenants, the fleet view) is open in headless Chromium driven
by Playwright, signed in with an admin token. Each alert is a fresh cow (`farm/fever-NNN`): three
readings at 40.1 °C, the third of which raises `fever`. For each, the time just before the third
reading is published (`time.time()`) is compared with when the alert arrived at three places,
all on this machine's wall clock:

- mqtt: the alert as ingest publishes it on `{prefix}/farm/alerts/+` (a paho subscriber);
- sse: the `alert` event of `GET /api/stream?readings=false` at an httpx client;
- sse+readings: the same from `GET /api/stream` (readings too, as the page asks) at another;
- page: the feed item's `data-shown-at`, the browser's `Date.now()` when the page inserted it.

The page also notes its long tasks (a PerformanceObserver: its main thread busy for 50 ms or
more at a stretch) and times its own work: every handler of its event stream (EventSource
listeners, wrapped before app.js runs) and the dashboard's redraws (`renderFleet`,
`renderOpenAlerts`, wrapped once it has loaded), so the time an alert spent waiting in the
browser can be laid against what the page was doing meanwhile; and its stalls, when a 25 ms
timer came 75 ms or more late, so its main thread could run nothing (busy with work not timed
here, such as style, layout and paint, or waiting for a CPU).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as paho

from benchmarks.alerts_stack import BenchmarkFailed
from benchmarks.query_stack import Served, Stack, ingest, serve, simulate
from core.mqtt import MqttEndpoint, make_client
from devices.topics import alert_subscription, telemetry_topic
from simulators.publisher import MqttPublisher
from tests.browser import CHROMIUM, CHROMIUM_ARGS

RULE = "fever"
TENANT = "farm"
FEVER_C = 40.1
# Long tasks of the page, from before its own script runs.
_OBSERVE = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    window.__longTasks.push([performance.timeOrigin + e.startTime, e.duration]);
  }
}).observe({ type: "longtask", buffered: true });
// Stalls: a 25 ms timer that ran 75 ms or more after the one before, so the main thread could
// run nothing meanwhile (busy, rendering, or waiting for a CPU): [began (epoch ms), ms].
window.__stalls = [];
let tick = performance.now();
setInterval(() => {
  const now = performance.now();
  if (now - tick >= 75) window.__stalls.push([performance.timeOrigin + tick, now - tick]);
  tick = now;
}, 25);
window.__spans = [];  // [what, began (epoch ms), ms]
window.span = (what, began) => window.__spans.push(
  [what, performance.timeOrigin + began, performance.now() - began]);
const add = EventSource.prototype.addEventListener;
EventSource.prototype.addEventListener = function (type, listener, options) {
  const timed = function (event) {
    const began = performance.now();
    try { return listener.call(this, event); } finally { window.span(`event ${type}`, began); }
  };
  return add.call(this, type, timed, options);
};
"""
_FEED = """() => [...document.querySelectorAll('#feed li[data-rule][data-state][data-device]')]
  .map((li) => [li.dataset.device, li.dataset.rule, li.dataset.state,
    Number(li.dataset.shownAt)])"""
# The dashboard's own functions that redraw parts of the page, timed wherever they are called
# from (app.js calls them through the global object); those app.js no longer has are skipped.
_WRAP = """(names) => names.filter((name) => typeof window[name] === "function").map((name) => {
  const inner = window[name];
  window[name] = function (...args) {
    const began = performance.now();
    try { return inner.apply(this, args); } finally { window.span(name, began); }
  };
  return name;
})"""
REDRAWS = ["renderFleet", "renderOpenAlerts"]
_SPANS = "window.__spans"
Progress = Callable[[str], None]
Key = tuple[str, str, str]  # device id, rule, state


@dataclass(frozen=True, slots=True)
class LiveLoad:
    alerts: int = 50
    spacing_s: float = 1.0  # from one alert's first reading to the next one's
    background_devices: int = 1_000  # thermostats, each one reading a second
    background_interval_s: float = 1.0
    warmup_s: float = 10.0  # background only, before the first alert
    name: str = "live"


@dataclass(slots=True)
class Arrivals:
    """When each alert change arrived somewhere (time.time(), seconds)."""

    at: dict[Key, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, key: Key, when: float) -> None:
        with self.lock:
            self.at.setdefault(key, when)

    def get(self, key: Key) -> float | None:
        with self.lock:
            return self.at.get(key)


class MqttAlerts:
    """Subscribed to every tenant's alert topic; notes each alert's arrival."""

    def __init__(self, mqtt_url: str, prefix: str) -> None:
        self.arrivals = Arrivals()
        subscribed = threading.Event()
        endpoint = MqttEndpoint.from_url(mqtt_url)
        self._client = make_client(endpoint, f"{prefix}-bench-alerts")
        self._client.on_connect = lambda c, *_: c.subscribe(alert_subscription(prefix), qos=1)
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(endpoint.host, endpoint.port)
        self._client.loop_start()
        if not subscribed.wait(15):
            self.close()
            raise BenchmarkFailed("the alert subscriber was not subscribed within 15 s")

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        now = time.time()
        alert = orjson.loads(msg.payload)
        self.arrivals.note((alert["device_id"], alert["rule"], alert["state"]), now)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class SseAlerts:
    """`GET /api/stream` (with `readings` or not) on a thread of its own; notes each `alert`
    event."""

    def __init__(self, served: Served, *, readings: bool) -> None:
        self._readings = "true" if readings else "false"
        self.arrivals = Arrivals()
        self._url = f"{served.url}/api/stream"
        self._hello = threading.Event()
        self._stopping = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=None), headers=served.headers)
        self._socket: socket.socket | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name="sse", daemon=True)
        self._thread.start()
        if not self._hello.wait(15):
            raise BenchmarkFailed(f"no hello from {self._url} within 15 s: {self.error!r}")

    def _read(self) -> None:
        try:
            params = {"readings": self._readings}
            with self._client.stream("GET", self._url, params=params) as response:
                self._socket = response.extensions["network_stream"].get_extra_info("socket")
                event = ""
                for line in response.iter_lines():
                    now = time.time()
                    if line.startswith("event: "):
                        event = line[7:]
                        if event == "hello":
                            self._hello.set()
                    elif line.startswith("data: ") and event == "alert":
                        alert = orjson.loads(line[6:])
                        self.arrivals.note((alert["device_id"], alert["rule"], alert["state"]), now)
        except (httpx.HTTPError, RuntimeError) as exc:
            if not self._stopping.is_set():
                self.error = exc

    def close(self) -> None:
        self._stopping.set()
        # Closing the client does not wake a thread blocked reading the socket: that would
        # wait for the next event or heartbeat (up to 15 s); a shutdown ends its read at once.
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self._client.close()
        self._thread.join(10)


def _publish_alerts(
    publisher: MqttPublisher, prefix: str, load: LiveLoad, published: dict[Key, float]
) -> None:
    """Each alert's three fever readings; the time just before the third is published."""
    began = time.monotonic()
    for n in range(load.alerts):
        pause = began + n * load.spacing_s - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # pacing the alerts, not synchronisation
        device_id = f"fever-{n:03d}"
        topic = telemetry_topic(prefix, TENANT, "cow_tracker", device_id)
        for seq in range(3):
            reading = {**_COW, "ts": time.time(), "seq": seq, "body_temp_c": FEVER_C}
            if seq == 2:
                published[(device_id, RULE, "raised")] = time.time()
            publisher.publish(topic, orjson.dumps(reading))


_COW = {
    "body_temp_c": 38.6,
    "activity": 420,
    "rumination_min": 31,
    "lat": 52.09,
    "lon": 5.12,
    "battery_pct": 87.5,
}


def live_latency(stack: Stack, load: LiveLoad, progress: Progress) -> dict[str, Any]:
    """Runs section 3 (see the module's docstring); BenchmarkFailed if any alert is missing
    anywhere. Delays in ms per place, the background rate achieved and the page's long tasks."""
    from playwright.sync_api import sync_playwright  # a test dependency; only this section

    db = prefix = load.name
    published: dict[Key, float] = {}
    page_seen: dict[Key, float] = {}
    with ExitStack() as stack_of:
        stack_of.enter_context(ingest(stack, db, prefix))
        served = stack_of.enter_context(serve(stack, db, prefix))
        mqtt = MqttAlerts(stack.mqtt_url, prefix)
        stack_of.callback(mqtt.close)
        sse = SseAlerts(served, readings=False)
        stack_of.callback(sse.close)
        sse_readings = SseAlerts(served, readings=True)
        stack_of.callback(sse_readings.close)
        playwright = stack_of.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        stack_of.callback(browser.close)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.add_init_script(_OBSERVE)
        stack_of.enter_context(
            simulate(stack, prefix, load.background_devices, load.background_interval_s)
        )
        # Signed in as the dashboard signs in: the token starts a session, the cookie its id.
        signed_in = page.request.post(f"{served.url}/api/session", data={"token": served.token})
        if not signed_in.ok:
            raise BenchmarkFailed(f"sign-in answered {signed_in.status}: {signed_in.text()}")
        page.goto(served.url + "/")
        # A function, not an expression: Playwright polls an expression with `eval`, which the
        # dashboard's Content-Security-Policy refuses.
        page.wait_for_function(
            "() => document.getElementById('live').textContent === 'live'", timeout=30_000
        )
        # The background load has begun once a thermostat is in the fleet table; then it
        # settles for `warmup_s` before anything is measured.
        page.wait_for_function(
            "() => document.querySelectorAll('#devices tbody tr').length > 0", timeout=30_000
        )
        progress(f"  background: {load.background_devices:,} thermostats for {load.warmup_s:g} s…")
        time.sleep(load.warmup_s)  # letting the background load settle before measuring
        devices_shown = page.locator("#devices tbody tr").count()
        wrapped = page.evaluate(_WRAP, REDRAWS)
        page.evaluate("for (const a of [__longTasks, __spans, __stalls]) a.length = 0")
        endpoint = MqttEndpoint.from_url(stack.mqtt_url)
        publisher = MqttPublisher(endpoint, client_id=f"{prefix}-bench-pub")
        publisher.start()
        stack_of.callback(publisher.close)
        progress(f"  {load.alerts} fever alerts, one every {load.spacing_s:g} s…")
        renderer_before = renderer_schedule()
        window_began = time.time()
        sender = threading.Thread(
            target=_publish_alerts, args=(publisher, prefix, load, published), name="alerts"
        )
        sender.start()
        deadline = time.monotonic() + load.alerts * load.spacing_s + 30
        while time.monotonic() < deadline:
            for device_id, rule, state, shown_ms in page.evaluate(_FEED):
                page_seen.setdefault((device_id, rule, state), shown_ms / 1000)
            if not sender.is_alive() and all(k in page_seen for k in published):
                break
            page.wait_for_timeout(200)  # polling the page; bounded by the deadline
        sender.join()
        window_ended = time.time()
        renderer_after = renderer_schedule()
        # (began, ms): began in seconds on this machine's clock, as the arrivals.
        long_tasks = [(at / 1000, float(ms)) for at, ms in page.evaluate("window.__longTasks")]
        spans = [(str(what), at / 1000, float(ms)) for what, at, ms in page.evaluate(_SPANS)]
        stalls = [(at / 1000, float(ms)) for at, ms in page.evaluate("window.__stalls")]
        if errors:
            raise BenchmarkFailed(f"the page threw: {errors[:3]}")
    background = _background_rate(stack, db, window_began, window_ended)
    places = ("mqtt", "sse", "sse+readings", "page")
    delays: dict[str, list[float]] = {place: [] for place in places}
    missing: dict[str, list[str]] = {place: [] for place in places}
    for key, sent in sorted(published.items()):
        for place, when in (
            ("mqtt", mqtt.arrivals.get(key)),
            ("sse", sse.arrivals.get(key)),
            ("sse+readings", sse_readings.arrivals.get(key)),
            ("page", page_seen.get(key)),
        ):
            if when is None:
                missing[place].append(key[0])
            else:
                delays[place].append((when - sent) * 1000)
    if any(missing.values()):
        raise BenchmarkFailed(f"alerts never seen: {missing}")
    # The alerts the page showed 50 ms or more after the SSE client that asks as the page
    # does had them; what the page's main thread was doing while each was on its way.
    late = [
        (sse_readings.arrivals.at[key], page_seen[key])
        for key in published
        if page_seen[key] - sse_readings.arrivals.at[key] >= 0.05
    ]
    behind_task = sum(
        any(began < shown and began + ms / 1000 > arrived for began, ms in long_tasks)
        for arrived, shown in late
    )
    # Per kind of work, the page's time spent while the late alerts were on their way.
    meanwhile: dict[str, float] = {}
    for what, began, ms in spans:
        for arrived, shown in late:
            meanwhile[what] = meanwhile.get(what, 0.0) + _overlap_ms(arrived, shown, [(began, ms)])
    waited = [(shown - arrived) * 1000 for arrived, shown in late]
    stalled = [_overlap_ms(arrived, shown, stalls) for arrived, shown in late]
    by_kind: dict[str, list[float]] = {}
    for what, _, ms in spans:
        by_kind.setdefault(what, []).append(ms)
    return {
        "alerts": len(published),
        "delays_ms": delays,
        "background_per_s": background,
        "devices_shown": devices_shown,
        "long_tasks_ms": [ms for _, ms in long_tasks],
        "late_in_page": len(late),
        "late_behind_long_task": behind_task,
        "late_meanwhile_ms": {k: v for k, v in meanwhile.items() if v > 0},
        "renderer_cpu_s": renderer_after[0] - renderer_before[0],
        "renderer_waiting_s": renderer_after[1] - renderer_before[1],
        "late_waited_ms": waited,
        "late_stalled_ms": stalled,
        "stalls_ms": [ms for _, ms in stalls],
        "page_work_ms": by_kind,
        "timed_functions": wrapped,
        "seconds": window_ended - window_began,
    }


def renderer_schedule() -> tuple[float, float]:
    """(seconds on a CPU, seconds ready to run but waiting for one) of the main threads of
    this process's Chromium renderers, from the kernel's scheduler statistics."""
    parents: dict[int, int] = {}
    renderers = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
        if b"--type=renderer" in command:
            renderers.append(int(entry.name))
    on_cpu = waiting = 0.0
    for pid in renderers:
        ancestor = pid
        while ancestor > 1 and ancestor != os.getpid():
            ancestor = parents.get(ancestor, 1)
        if ancestor != os.getpid():
            continue  # someone else's browser
        try:
            ran, waited, _ = (Path(f"/proc/{pid}/schedstat").read_text()).split()
        except (OSError, ValueError):
            continue
        on_cpu += int(ran) / 1e9
        waiting += int(waited) / 1e9
    return on_cpu, waiting


def _overlap_ms(began: float, ended: float, spans: list[tuple[float, float]]) -> float:
    """How much of [began, ended] the (start s, ms) spans cover, in ms."""
    return sum(
        max(0.0, min(ended, start + ms / 1000) - max(began, start)) * 1000 for start, ms in spans
    )


def _background_rate(stack: Stack, db: str, began: float, ended: float) -> float:
    """Thermostat readings stored per second over [began, ended) (by the readings' times)."""
    q = (
        f'SELECT count("seq") FROM "thermostat" WHERE time >= {int(began * 1e9)} '
        f"AND time < {int(ended * 1e9)}"
    )
    response = httpx.post(f"{stack.influx_url}/query", data={"db": db, "q": q}, timeout=60)
    response.raise_for_status()
    series = [s for r in response.json()["results"] for s in r.get("series", [])]
    count = int(series[0]["values"][0][1]) if series else 0
    return count / (ended - began)
