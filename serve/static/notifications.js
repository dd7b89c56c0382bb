// The dashboard's side of notifications: who is on call now (GET /api/oncall, a panel beside
// the open alerts), and an alert's page.
// An alert's page (#/alert/ID): the alert, acknowledging it, and its notification timeline
// (GET /api/alerts/{id}/timeline): who was told, through which channel (its label or kind,
// never its address), when; what waited for quiet hours to end, what failed, each escalation
// and what stopped it. Timeline rows are written by the notifier, not sent on the live stream:
// the page asks again on every change of the alert and every 15 s while it is shown.
// Loaded before app.js, whose helpers (el, api, state, clock, ackControls) it uses when called.
"use strict";

const TIMELINE_REFRESH_MS = 15000;
const STATE_RANK = { raised: 0, acknowledged: 1, resolved: 2 };
let alertLoads = 0;  // a newer load wins over an older one
let timelineTimer = null;
let newestChange = null;  // of the alert shown, from the stream or an acknowledgement's answer

async function showAlert(id) {
  const load = ++alertLoads;
  if (state.alertPage !== id) newestChange = null;
  state.alertPage = id;
  clearTimeout(timelineTimer);
  const { alert, events } = await api(`/api/alerts/${id}/timeline`);
  if (load !== alertLoads || state.alertPage !== id) return;
  // Ingest publishes a change just before it stores it: one seen on the stream may be newer.
  const shown = newestChange && isNewer(newestChange, alert) ? newestChange : alert;
  showAlertHead(shown);
  $("timeline").replaceChildren(...(events.length ? events.map(timelineItem)
    : [el("li", { class: "muted" }, "Nobody has been notified of this alert (no route matched it, or no notifier runs).")]));
  $("timeline").dataset.shown = `${id}/${shown.state}/${events.length}`;
  timelineTimer = setTimeout(() => { if (state.alertPage === id) showAlert(id).catch(showError); }, TIMELINE_REFRESH_MS);
}

// A change of the alert shown (the live stream's, or the answer to acknowledging it).
function alertChanged(a) {
  if (state.alertPage !== a.id) return;
  if (!newestChange || isNewer(a, newestChange)) newestChange = a;
  showAlert(a.id).catch(showError);  // its timeline may have grown too
}

function isNewer(a, b) {
  const [ta, tb] = [Date.parse(a.ts), Date.parse(b.ts)];
  return ta > tb || (ta === tb && STATE_RANK[a.state] > STATE_RANK[b.state]);
}

function showAlertHead(alert) {
  $("alert-title").replaceChildren(el("b", {}, alert.rule), " on ",
    el("a", { href: `#/device/${alert.tenant}/${alert.device_id}` }, `${alert.tenant}/${alert.device_id}`));
  const acknowledged = alert.acknowledged_by ? ` · acknowledged by ${alert.acknowledged_by}` : "";
  $("alert-facts").textContent =
    `${alert.state} · ${alert.severity} · since ${clock(alert.first_seen)}${acknowledged}`;
  $("alert-message").textContent = alert.message;
  const act = alert.state === "raised" && mayAcknowledge();
  $("alert-actions").replaceChildren(...(act ? [ackControls(alert)] : []));
}

function timelineItem(e) {
  const who = [e.person, e.channel && `via ${e.channel}`, e.level ? `level ${e.level}` : ""]
    .filter(Boolean).join(" · ");
  return el("li", { class: `event ${e.event}`, dataset: { event: e.event, person: e.person } },
    el("span", { class: "when" }, clock(e.ts)), " ", el("b", {}, e.event), " ", who,
    ...(e.detail ? [el("div", { class: "detail" }, e.detail)] : []));
}

function leaveAlert() {
  state.alertPage = null;
  newestChange = null;
  clearTimeout(timelineTimer);
}

// Who is on call in each rotation of the shown tenants; the panel says so when there is none
// (no notify file, or no rotation of these tenants).
async function loadOnCall() {
  const { rotations } = await api("/api/oncall", { tenant: state.tenant });
  $("oncall-panel").hidden = false;
  $("oncall").replaceChildren(...(rotations.length ? rotations.map(onCallItem)
    : [el("li", { class: "muted" }, "No on-call rotation for these tenants.")]));
  $("oncall").dataset.shown = String(rotations.length);
}

function onCallItem(r) {
  const then = r.next.length ? ` · then ${r.next.join(", ")}` : "";
  const until = r.until ? ` · until ${clock(r.until)}` : "";
  return el("li", { dataset: { rotation: r.rotation, tenant: r.tenant } },
    el("b", { class: "person" }, r.on_call), r.override ? " (stand-in)" : "",
    el("div", { class: "when" }, `${r.rotation} · ${r.tenant}${until}${then}`));
}
