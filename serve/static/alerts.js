// The open alerts and the live feed of alert changes, and acknowledging an alert: with a mouse
// after a note, with a finger in one tap.
// Loaded before app.js, whose helpers (el, api, post, state, clock, $) it uses when called.
"use strict";

async function loadOpenAlerts() {
  const { alerts } = await api("/api/alerts", { tenant: state.tenant });
  state.openAlerts = new Map(alerts.map((a) => [a.id, a]));
  renderOpenAlerts();
}

function alertItem(a, fresh, actions = false) {
  const shown = el("li", { class: `${a.severity} ${a.state}${fresh ? " fresh" : ""}`,
    dataset: { alertId: a.id, state: a.state, rule: a.rule, device: a.device_id,
      shownAt: String(Date.now()) } },
  el("span", { class: "state" }, a.state), el("a", { class: "alert-link", href: `#/alert/${a.id}` }, el("b", {}, a.rule)), " ",
  el("a", { href: `#/device/${a.tenant}/${a.device_id}` }, `${a.tenant}/${a.device_id}`),
  el("div", {}, a.message + (a.acknowledged_by ? ` (acknowledged by ${a.acknowledged_by})` : "")),
  el("div", { class: "when" }, `${clock(a.ts)} · ${a.severity} · id ${a.id}`));
  if (actions && a.state === "raised" && mayAcknowledge()) shown.append(ackControls(a));
  return shown;
}

// With a mouse, "acknowledge" opens a note field; sending it answers once ingest has taken it.
// With a finger (a phone), one tap acknowledges: a person paged at night acknowledges first
// and types later, if ever.
function ackControls(a) {
  const box = el("div", { class: "ack-box" });
  const open = el("button", { type: "button", class: "ack" }, "acknowledge");
  if (oneTap()) {
    // Only the alert the finger went down on: the list is redrawn whenever an alert changes,
    // and a button moved under a resting finger is another alert's (its tap does nothing; the
    // person sees the list move and taps again). A keyboard's click (detail 0) has no finger.
    let touched = false;
    open.addEventListener("pointerdown", () => { touched = true; });
    open.addEventListener("click", (event) => {
      if (touched || event.detail === 0) sendAck(a, "", open, box);
    });
  } else {
    open.addEventListener("click", () => {
      const note = el("input", { class: "ack-note", maxlength: "500", placeholder: "note (optional): what is being done" });
      const send = el("button", { type: "submit", class: "ack-send" }, "acknowledge");
      const form = el("form", { class: "ack-form" }, note, send);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        sendAck(a, note.value.trim(), send, box);
      });
      box.replaceChildren(form);
      note.focus();
    });
  }
  box.append(open);
  return box;
}

// The acknowledgement, its button held down until ingest answered; an error is shown in `box`.
async function sendAck(a, note, button, box) {
  button.disabled = true;
  box.querySelector(".ack-error")?.remove();
  try {
    const acknowledged = await post(`/api/alerts/${a.id}/ack`, { note });
    state.openAlerts.set(acknowledged.id, acknowledged);  // the feed gets it from the stream
    renderOpenAlerts();
    alertChanged(acknowledged);  // notifications.js
  } catch (error) {
    button.disabled = false;
    if (!(error instanceof SignedOut)) box.append(el("div", { class: "ack-error" }, error.message));
  }
}

function renderOpenAlerts() {
  const alerts = [...state.openAlerts.values()].sort((a, b) =>
    SEVERITY_RANK[b.severity] - SEVERITY_RANK[a.severity] || Date.parse(b.ts) - Date.parse(a.ts));
  $("open-alerts").replaceChildren(...alerts.map((a) => alertItem(a, false, true)));
  $("open-count").textContent = `(${alerts.length})`;
}

function onAlert(a) {
  if (state.tenant && a.tenant !== state.tenant) return;
  const feed = $("feed");
  feed.querySelector(".placeholder")?.remove();
  feed.prepend(alertItem(a, true));
  while (feed.children.length > FEED_MAX) feed.lastChild.remove();
  if (a.state === "resolved") state.openAlerts.delete(a.id);
  else state.openAlerts.set(a.id, a);
  renderOpenAlerts();
  const device = state.devices.get(`${a.tenant}/${a.device_id}`);
  if (device) {
    const mine = [...state.openAlerts.values()].filter((x) => x.tenant === a.tenant && x.device_id === a.device_id);
    device.open_alerts = mine.length;
    device.worst_severity = mine.reduce((w, x) => (w && SEVERITY_RANK[w] >= SEVERITY_RANK[x.severity] ? w : x.severity), null);
    if (!state.device) renderFleet();
  }
  if (state.device && state.device.tenant === a.tenant && state.device.id === a.device_id) loadEpisodes();
  if (state.device) tellMap("alert", a);  // map.js: where an automation fired
  alertChanged(a);  // notifications.js: the alert's page, if it is shown
}

function oneTap() {
  return window.matchMedia("(pointer: coarse)").matches;
}
