// The moclo dashboard: a fleet overview, the open alerts and a live feed of alert changes
// (alerts.js), a page per device with charts of its fields and its alert episodes marked on
// them (device.js), its commands (commands.js) and, for a device with a position, its track on
// a map (map.js); an alert's page with who was told, and who is on call (notifications.js).
// This file: the helpers the others use, signing in, the fleet, the live stream, the routes.
// Plain JavaScript, no build step; uPlot (vendored) draws the charts. Everything comes from
// this server's /api (see /api/openapi.json); the live parts from /api/stream (Server-Sent
// Events). On every (re)connect of the stream the lists are loaded again, so a dropped
// connection never leaves a stale picture behind.
// Signing in: a pasted API token is sent once to POST /api/session, which starts a server-side
// session and sets its id in an HttpOnly cookie (neither the token nor the id is held by this
// script afterwards); every request and the stream carry the cookie, and a 401 anywhere brings
// the sign-in screen back.
// On a phone the same page folds into one column (style.css) and installs as an app
// (/manifest.webmanifest); its service worker (/sw.js) keeps the last answers, so without a
// network the last view is shown again, marked as offline (offline.js).
"use strict";

const state = {
  tenant: new URLSearchParams(location.search).get("tenant") || "",
  devices: new Map(),     // "tenant/device" -> device summary from /api/devices
  openAlerts: new Map(),  // alert id -> alert
  device: null,           // {tenant, id} on a device page
  alertPage: null,        // the alert id on an alert's page (notifications.js)
  since: "24h",
  charts: [],             // [{plot, field, data}] on a device page
  stream: null,
  arriving: null,         // devices the stream brought while /api/devices was being asked
  streamRefused: false,   // the last stream was refused for want of a place (429)
  who: null,               // {name, role, tenants (null: every tenant)} once signed in
};
const SEVERITY_RANK = { info: 0, warning: 1, critical: 2 };
const FEED_MAX = 100;
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

class SignedOut extends Error {}

async function api(path, params = {}, options = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) v.forEach((x) => url.searchParams.append(k, x));
    else if (v !== "" && v !== null && v !== undefined) url.searchParams.set(k, v);
  }
  const response = await fetch(url, options);
  noteFreshness(response);  // offline.js
  if (response.status === 401) {
    // Only the first 401 shows the sign-in screen: a later one (a refresh in flight when the
    // stream said the session ended, or when the person signed out) must not wipe its message.
    if (state.who) showSignIn("Your session has ended (signed out, expired, or the token was revoked): sign in again.");
    throw new SignedOut("signed out");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `${response.status} from ${path}`);
  return body;
}

function post(path, body) {
  return api(path, {}, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

function showError(error) {
  if (error instanceof SignedOut) return;  // the sign-in screen says it
  if (error && isOffline()) return;  // the offline banner says it (offline.js)
  const box = $("error");
  box.textContent = error ? String(error.message || error) : "";
  box.hidden = !error;
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

function clock(iso) {
  return new Date(iso).toLocaleString([], { dateStyle: "short", timeStyle: "medium" });
}

function formatValue(v) {
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(2);
  return String(v);
}

// -- signing in ----------------------------------------------------------------------------

function showSignIn(message = "") {
  if (state.stream) { state.stream.close(); state.stream = null; }
  // However the session ended (signed out, expired, revoked), what was kept for offline goes.
  forgetSavedAnswers().catch(showError);  // offline.js
  state.who = null;
  for (const id of ["app", "who", "tenant-choice", "live", "error"]) $(id).hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
  $("sign-in-error").hidden = !message;
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const input = $("token");
  const token = input.value.trim();
  input.value = "";  // the session's cookie stands for it from now on, out of this script's reach
  const response = await fetch("/api/session", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }),
  });
  const body = await response.json();
  if (!response.ok) { showSignIn(body.error || `${response.status} from /api/session`); return; }
  await startApp(body);
}

async function signOut() {
  await forgetSavedAnswers();  // offline.js: the next person on this phone sees nothing of ours
  const told = await endSession();  // offline.js
  showSignIn(told ? "" : "Signed out on this phone while offline: the session ends on the server as soon as the phone is online.");
}

async function startApp(who) {
  state.who = who;
  $("sign-in").hidden = true;
  for (const id of ["app", "who", "tenant-choice", "live"]) $(id).hidden = false;
  $("who-name").textContent = who.name;
  $("who-role").textContent = who.role;
  $("who-tenants").textContent = who.tenants ? who.tenants.join(", ") : "every tenant";
  try { await loadTenants(); } catch (error) { showError(error); }
  await route();
  // The open alerts come with the stream's hello; offline there is none, so the saved ones now.
  if (isOffline()) await refresh();
  connectStream();
}

function mayAcknowledge() {
  return state.who && (state.who.role === "operator" || state.who.role === "admin");
}

// -- fleet overview ----------------------------------------------------------------------

async function loadTenants() {
  // A token of some tenants is offered those alone; an admin of every tenant, each with data.
  // A token of one tenant shows that tenant. A token of every tenant starts on "all tenants"
  // even when only one has data so far: otherwise the page would settle on that tenant and
  // never show a tenant whose first reading comes later.
  const tenants = state.who.tenants || (await api("/api/tenants")).tenants;
  const onlyOne = Boolean(state.who.tenants) && tenants.length === 1;
  const select = $("tenant");
  const options = tenants.map((t) => el("option", { value: t }, t));
  if (!onlyOne) {
    options.unshift(el("option", { value: "" }, state.who.tenants ? "all my tenants" : "all tenants"));
  }
  select.replaceChildren(...options);
  select.value = tenants.includes(state.tenant) ? state.tenant : (onlyOne ? tenants[0] : "");
  state.tenant = select.value;
}

async function loadFleet() {
  // Readings the stream brings while the answer is on its way are newer than it: kept.
  const arriving = new Map();
  state.arriving = arriving;
  let devices;
  try {
    ({ devices } = await api("/api/devices", { tenant: state.tenant }));
  } finally {
    if (state.arriving === arriving) state.arriving = null;
  }
  state.devices = new Map(devices.map((d) => [`${d.tenant}/${d.device_id}`, d]));
  for (const [key, d] of arriving) {
    const known = state.devices.get(key);
    if (!known) state.devices.set(key, d);
    else if (Date.parse(d.last_seen) > Date.parse(known.last_seen)) Object.assign(known, { last_seen: d.last_seen, last: d.last });
  }
  renderFleet();
}

function renderFleet() {
  const filter = $("filter").value.trim().toLowerCase();
  const devices = [...state.devices.values()]
    .filter((d) => !filter || d.device_id.includes(filter) || d.device_type.includes(filter))
    .sort((a, b) => (b.open_alerts > 0) - (a.open_alerts > 0)
      || (SEVERITY_RANK[b.worst_severity] ?? -1) - (SEVERITY_RANK[a.worst_severity] ?? -1)
      || a.device_type.localeCompare(b.device_type) || a.device_id.localeCompare(b.device_id));
  const rows = devices.map((d) => {
    const values = Object.entries(d.last).filter(([k]) => k !== "seq").slice(0, 4)
      .map(([k, v]) => `${k} ${formatValue(v)}`).join(" · ");
    const alerts = d.open_alerts
      ? el("span", { class: `badge ${d.worst_severity}` }, `${d.open_alerts} open`) : "";
    const stale = d.last_seen && Date.now() - Date.parse(d.last_seen) > 15 * 60 * 1000;
    // The classes and labels place each cell on a phone, where a row is a card (style.css).
    return el("tr", { class: stale ? "stale" : "", dataset: { device: d.device_id } },
      el("td", { class: "device" }, el("a", { href: `#/device/${d.tenant}/${d.device_id}` }, d.device_id)),
      el("td", { class: "type" }, d.device_type), el("td", { class: "tenant" }, d.tenant),
      el("td", { class: "seen", title: d.last_seen || "", "data-label": "seen" }, ago(d.last_seen)),
      el("td", { class: "values" }, values), el("td", { class: "open" }, alerts));
  });
  $("devices").tBodies[0].replaceChildren(...rows);
  $("device-count").textContent = `(${devices.length})`;
  drawFleetMap(devices).catch(showError);  // map.js
  $("fleet-empty").hidden = state.devices.size > 0;

  const byType = new Map();
  for (const d of state.devices.values()) {
    const t = byType.get(d.device_type) || { count: 0, alerting: 0 };
    t.count += 1; t.alerting += d.open_alerts > 0;
    byType.set(d.device_type, t);
  }
  $("type-cards").replaceChildren(...[...byType].sort().map(([type, t]) =>
    el("div", { class: `card${t.alerting ? " alerting" : ""}` }, el("b", {}, t.count), type,
      el("div", { class: "muted" }, t.alerting ? `${t.alerting} with open alerts` : "all quiet"))));
}

// -- live stream ---------------------------------------------------------------------------

function connectStream() {
  if (state.stream) state.stream.close();
  if (!state.who) return;
  const params = new URLSearchParams();
  if (state.tenant) params.set("tenant", state.tenant);
  const source = new EventSource(`/api/stream?${params}`);
  state.stream = source;
  const live = $("live");
  source.addEventListener("hello", () => {
    live.className = "live on"; live.textContent = "live";
    if (state.streamRefused) { state.streamRefused = false; showError(null); }
    refresh();  // whatever happened while we were away
  });
  source.addEventListener("alert", (e) => onAlert(JSON.parse(e.data)));
  source.addEventListener("readings", (e) => onReadings(JSON.parse(e.data)));
  source.addEventListener("command", (e) => onCommand(JSON.parse(e.data)));  // commands.js
  source.addEventListener("overflow", () => { source.close(); setTimeout(connectStream, 1000); });
  source.addEventListener("unauthorized", () => {
    source.close();
    // The page's stream always comes with its session: revoking the token is one way it ends.
    showSignIn("Your session has ended (signed out, expired, or the token was revoked): sign in again.");
  });
  source.onerror = () => {
    live.className = "live off"; live.textContent = "reconnecting…";
    // A dropped stream reconnects by itself; a refused one (401, or the server restarting)
    // is closed for good: ask whether we are still signed in, then try again.
    if (source.readyState !== EventSource.CLOSED) return;
    setTimeout(async () => {
      if (state.stream !== source) return;
      try {
        await api("/api/session");
        const refusal = await streamRefusal(params);
        if (refusal) {
          // Every live place of this token is taken (other tabs or screens): say so, and
          // take one when it is free.
          state.streamRefused = true;
          live.textContent = "not live";
          showError(refusal);
          setTimeout(() => { if (state.stream === source) connectStream(); }, 10000);
          return;
        }
        connectStream();
      } catch (error) { showError(error); setTimeout(connectStream, 5000); }
    }, 2000);
  };
}

// EventSource does not say why a stream was refused. A 429 (the token holds as many live
// streams as it may) must be told, not shown as "reconnecting…" forever; the question takes a
// stream's place for a moment when there is room, so it is asked only after a refusal.
async function streamRefusal(params) {
  const probe = new AbortController();
  try {
    const answer = await fetch(`/api/stream?${params}`, { signal: probe.signal });
    if (answer.status !== 429) return null;
    const body = await answer.json();
    return `Not live: ${body.error || "this token has too many live streams open"}`;
  } finally {
    probe.abort();
  }
}

function onReadings(readings) {
  for (const r of readings) {
    const key = `${r.tenant}/${r.device_id}`;
    const known = state.devices.get(key);
    const { tenant, device_type, device_id, ts, ...fields } = r;
    if (known) { known.last_seen = ts; known.last = fields; }
    else if (!state.tenant || state.tenant === tenant) {
      state.devices.set(key, { tenant, device_type, device_id, last_seen: ts, last: fields, open_alerts: 0, worst_severity: null });
    }
    if (state.arriving && state.devices.has(key)) state.arriving.set(key, { ...state.devices.get(key) });
    if (state.device && state.device.tenant === tenant && state.device.id === device_id) appendToCharts(ts, fields);
  }
  if (!state.device) renderFleetSoon();
}

// Readings arrive 4 times a second; with a thousand devices, redrawing the table once a
// second is plenty and keeps the page responsive.
let renderPending = false;
function renderFleetSoon() {
  if (renderPending) return;
  renderPending = true;
  setTimeout(() => { renderPending = false; if (!state.device) renderFleet(); }, 1000);
}

// -- routing -------------------------------------------------------------------------------

async function refresh() {
  try {
    await Promise.all([loadOpenAlerts(), loadOnCall(), state.device ? null : loadFleet()]);
    showError(null);
  } catch (error) { showError(error); }
}

// One of three views: the fleet, a device's page, an alert's page (notifications.js).
function showView(shown) {
  for (const view of ["fleet-view", "device-view", "alert-view"]) $(view).hidden = view !== shown;
  $("app").classList.toggle("detail-page", shown !== "fleet-view");  // style.css: first on a phone
  if (shown !== "device-view") { state.device = null; forgetTrack(); }
  if (shown !== "alert-view") leaveAlert();
}

async function route() {
  const match = location.hash.match(/^#\/device\/([a-z0-9-]+)\/([a-z0-9-]+)$/);
  const alert = location.hash.match(/^#\/alert\/([0-9a-f]{12})$/);
  try {
    showView(match ? "device-view" : alert ? "alert-view" : "fleet-view");
    if (match) await showDevice(match[1], match[2]);
    else if (alert) await showAlert(alert[1]);
    else await loadFleet();
    showError(null);
  } catch (error) { showError(error); }
}

async function start() {
  $("tenant").addEventListener("change", (e) => {
    state.tenant = e.target.value;
    const url = new URL(location.href);
    if (state.tenant) url.searchParams.set("tenant", state.tenant); else url.searchParams.delete("tenant");
    history.replaceState(null, "", url);
    connectStream(); route();
  });
  $("filter").addEventListener("input", renderFleet);
  $("ranges").addEventListener("click", (e) => {
    if (e.target.dataset.since) { state.since = e.target.dataset.since; route(); }
  });
  window.addEventListener("hashchange", () => { if (state.who) route(); });
  $("sign-in-form").addEventListener("submit", signIn);
  $("token").addEventListener("input", () => { $("sign-in-error").hidden = true; });
  $("sign-out").addEventListener("click", signOut);
  setInterval(() => { if (state.who && !state.device) renderFleet(); }, 10000);  // "last seen" ages
  window.addEventListener("resize", resizeCharts);  // a phone turned sideways
  keepOffline();  // offline.js
  let response;
  try {
    if (!(await endOwedSession())) throw new Error("offline");  // offline.js: still signed out
    response = await fetch("/api/session");
  } catch {  // no network, and no saved view (never signed in here, or signed out since)
    showSignIn("Offline, and nothing saved from an earlier visit: connect to sign in.");
    return;
  }
  noteFreshness(response);
  if (response.ok) await startApp(await response.json());
  else if (response.status === 401) showSignIn();
  else showError(new Error((await response.json()).error || `${response.status} from /api/session`));
}

start();
