// A device page's commands and desired state: the type's catalogue (GET .../commands) as one
// form per command, its arguments drawn from their JSON Schema with the bounds as the inputs'
// limits; a command this token may not send is shown disabled with the reason (who may). A
// click asks (POST .../commands, answered at once with the command's id); what becomes of it
// (sent → succeeded, failed, rejected, expired, refused) comes from the live stream's
// `command` events, so outcomes of commands sent by others show up too.
// Loaded before app.js, whose helpers (el, api, post, state, clock) it uses when called.
"use strict";

const commandLog = new Map();  // command id -> newest update (or the request), newest last
const STEPS = { requested: 0, sent: 1, accepted: 2 };  // later steps are final

async function showCommands(tenant, id) {
  const box = $("commands");
  box.replaceChildren();
  $("command-log").replaceChildren();
  const catalogue = await api(`/api/devices/${tenant}/${id}/commands`);
  if (!state.device || state.device.tenant !== tenant || state.device.id !== id) return;
  $("acting").hidden = catalogue.commands.length === 0 && !catalogue.desired;
  for (const command of catalogue.commands) box.append(commandForm(tenant, id, command));
  $("desired-box").replaceChildren();
  if (catalogue.desired) {
    $("desired-box").append(desiredForm(tenant, id, catalogue.desired), el("table", { id: "desired-view", class: "desired-view" }));
    await showDesired(tenant, id);
  }
  renderCommandLog();
  box.dataset.shown = `${tenant}/${id}`;
}

// One input per argument, from its schema: a choice is a select, a number has its bounds.
function argumentInput(name, schema, defs) {
  let s = schema.anyOf ? schema.anyOf.find((x) => x.type !== "null") : schema;
  if (s.$ref) s = defs[s.$ref.split("/").pop()] || s;
  if (s.enum) return el("select", { name }, ...s.enum.map((v) => el("option", { value: v }, v)));
  if (s.type === "boolean") return el("select", { name, "data-kind": "boolean" },
    el("option", { value: "true" }, "yes"), el("option", { value: "false" }, "no"));
  const attrs = { name, required: "" };
  if (s.type === "integer" || s.type === "number") {
    Object.assign(attrs, { type: "number", step: s.type === "integer" ? "1" : "any", "data-kind": s.type });
    if (s.minimum !== undefined) attrs.min = s.minimum;
    if (s.maximum !== undefined) attrs.max = s.maximum;
    attrs.placeholder = `${s.minimum ?? ""}–${s.maximum ?? ""}`;
  } else if (s.pattern) {
    // A pattern attribute is compiled with the `v` flag, where a bare `-` ends no class.
    attrs.pattern = s.pattern.replace(/^\^|\$$/g, "").replace(/-\]/g, "\\-]");
  }
  return el("input", attrs);
}

function readArguments(form) {
  const args = {};
  for (const input of form.querySelectorAll("[name]")) {
    const kind = input.dataset.kind;
    if (input.value === "") continue;
    args[input.name] = kind === "boolean" ? input.value === "true"
      : kind === "integer" || kind === "number" ? Number(input.value) : input.value;
  }
  return args;
}

function commandForm(tenant, id, command) {
  const props = command.arguments.properties || {};
  const inputs = Object.entries(props).map(([name, schema]) =>
    el("label", {}, name, " ", argumentInput(name, schema, command.arguments.$defs || {})));
  const send = el("button", { type: "submit", class: "command-send" }, command.name.replace(/_/g, " "));
  const form = el("form", { class: "command", dataset: { command: command.name }, title: command.description },
    send, ...inputs, el("span", { class: "muted" }, command.description));
  if (!command.allowed) {
    for (const input of form.querySelectorAll("button, input, select")) input.disabled = true;
    form.append(el("div", { class: "why-not" }, command.reason));
    return form;
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    send.disabled = true;
    form.querySelector(".command-error")?.remove();
    try {
      const asked = await post(`/api/devices/${tenant}/${id}/commands`, { name: command.name, args: readArguments(form) });
      if (!commandLog.has(asked.id)) commandLog.set(asked.id, { ...asked, issuer: state.who.name, ts: new Date().toISOString() });
      renderCommandLog();
    } catch (error) {
      if (!(error instanceof SignedOut)) form.append(el("div", { class: "command-error" }, error.message));
    } finally { send.disabled = false; }
  });
  return form;
}

function desiredForm(tenant, id, desired) {
  const props = desired.state.properties || {};
  const form = el("form", { class: "command desired-form" }, el("b", {}, "desired state"));
  const simple = Object.entries(props).filter(([, s]) => !(s.anyOf || [s]).some((x) => x.type === "object"));
  for (const [name, schema] of simple) form.append(el("label", {}, name, " ", argumentInput(name, schema, desired.state.$defs || {})));
  const send = el("button", { type: "submit", class: "desired-send" }, "set");
  form.append(send, el("span", { id: "desired-shown", class: "muted" }));
  if (!desired.allowed || simple.length === 0) {
    for (const input of form.querySelectorAll("button, input, select")) input.disabled = true;
    if (!desired.allowed) form.append(el("div", { class: "why-not" }, desired.reason));
    return form;
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.querySelector(".command-error")?.remove();
    try {
      await api(`/api/devices/${tenant}/${id}/desired`, {}, {
        method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ state: readArguments(form) }),
      });
    } catch (error) {
      if (!(error instanceof SignedOut)) form.append(el("div", { class: "command-error" }, error.message));
    }
  });
  return form;
}

// Desired against reported, setting by setting: what a person asked for and what the device
// says it applied; a difference stays marked until the device reports it.
async function showDesired(tenant, id) {
  const view = await api(`/api/devices/${tenant}/${id}/desired`);
  const table = $("desired-view");
  if (!table || !state.device || state.device.id !== id) return;
  const wanted = view.desired ? view.desired.state : {}, applied = view.reported ? view.reported.state : {};
  const names = [...new Set([...Object.keys(wanted), ...Object.keys(applied)])].sort();
  const shown = (v) => (v === undefined || v === null ? "–" : typeof v === "object"
    ? Object.entries(v).map(([a, b]) => `${a} ${b}`).join(", ") : formatValue(v));
  table.replaceChildren(el("thead", {}, el("tr", {}, el("th", {}, "setting"), el("th", {}, "desired"),
    el("th", {}, "reported"), el("th", {}, ""))),
  el("tbody", {}, ...names.map((name) => {
    const differs = name in view.differences;
    return el("tr", { class: differs ? "differs" : "", dataset: { setting: name, differs: String(differs) } },
      el("td", {}, name), el("td", {}, shown(wanted[name])), el("td", {}, shown(applied[name])),
      el("td", {}, differs ? "waiting for the device" : name in wanted ? "applied" : ""));
  })));
  table.dataset.version = String(view.desired ? view.desired.version : 0);
  table.dataset.confirmed = String(view.confirmed_version);
}

function onCommand(update) {
  const known = commandLog.get(update.id);
  // Steps can cross on the way (the stream's `sent` before the POST's answer): never go back.
  if (known && !(known.status in STEPS) && update.status in STEPS) return;
  commandLog.delete(update.id);
  commandLog.set(update.id, { ...known, ...update });
  while (commandLog.size > 200) commandLog.delete(commandLog.keys().next().value);
  if (state.device) tellMap("command", update);  // map.js: what an automation did, and how
  if (state.device && state.device.tenant === update.tenant && state.device.id === update.device) {
    renderCommandLog();
    if (update.name === "desired" && $("desired-view")) showDesired(update.tenant, update.device).catch(showError);
  }
}

function renderCommandLog() {
  if (!state.device) return;
  const { tenant, id } = state.device;
  const mine = [...commandLog.values()].filter((c) => c.tenant === tenant && c.device === id).reverse();
  $("command-log").replaceChildren(...mine.slice(0, 20).map((c) => {
    const item = el("li", { class: `status-${c.status}`, dataset: { commandId: c.id, status: c.status, name: c.name } },
      el("span", { class: "state" }, c.status), el("b", {}, c.name), ` by ${c.issuer || "?"}`,
      c.trigger ? el("span", { class: "because", dataset: { alertId: c.alert || "" } }, ` because ${c.trigger}`) : "",
      c.reason ? el("div", {}, c.reason) : "", el("div", { class: "when" }, `${clock(c.ts)} · id ${c.id}`));
    if (c.output) item.append(outputTable(c.output));
    return item;
  }));
}

// A command's report (a pacemaker's read-out): one row per value.
function outputTable(output) {
  const rows = Object.entries(output).map(([k, v]) => el("tr", {}, el("th", {}, k),
    el("td", {}, typeof v === "object" && v !== null
      ? Object.entries(v).map(([a, b]) => `${a} ${b}`).join(", ") || "none" : formatValue(v))));
  return el("table", { class: "output" }, el("tbody", {}, ...rows));
}
