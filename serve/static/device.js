// A device's page: a chart of each field over the chosen range (uPlot), its alert episodes
// marked on every chart and listed below, new readings added as they arrive; its commands are
// commands.js, its track on a map map.js.
// Loaded before app.js, whose helpers (el, api, state, clock, $) it uses when called.
"use strict";

let deviceLoads = 0;  // a newer load (another range, another device) wins over an older one

async function showDevice(tenant, id) {
  const load = ++deviceLoads;
  state.device = { tenant, id };
  $("device-title").textContent = `${tenant} / ${id}`;
  for (const b of $("ranges").children) b.classList.toggle("chosen", b.dataset.since === state.since);
  const device = await api(`/api/devices/${tenant}/${id}`);
  showCommands(tenant, id).catch(showError);  // commands.js; the charts need not wait
  $("device-facts").textContent = `${device.device_type} · last reading ${ago(device.last_seen)}` +
    ` · ${device.open_alerts ? `${device.open_alerts} open alert(s)` : "no open alerts"}`;
  const since = state.since;
  const doc = await api("/api/series", { device: id, tenant, since, every: "auto" });
  if (load !== deviceLoads) return;
  await drawCharts(doc);
  await loadEpisodes();
  if (load !== deviceLoads) return;
  // Says which range the charts show once they and their episodes are drawn (for tests, and
  // for anyone scripting the page): clicking ranges quickly starts several loads.
  $("charts").dataset.shown = `${tenant}/${id}/${since}`;
}

async function drawCharts(doc) {
  state.charts.forEach((c) => c.plot.destroy());
  state.charts = [];
  forgetTrack();
  const box = $("charts");
  box.replaceChildren();
  const series = doc.series[0];
  if (!series || series.points.length === 0) {
    box.append(el("p", { class: "muted" }, "No readings in this range."));
    return;
  }
  const times = series.points.map((p) => Date.parse(p[0]) / 1000);
  // The x axis spans the whole range asked for, so a silence shows as a gap, not a zoom.
  const range = [Date.parse(doc.query.from) / 1000, Date.parse(doc.query.to) / 1000];
  // A position is a track on a map (map.js), not two time series.
  const mapped = hasPosition(series.fields) ? ["lat", "lon"] : [];
  series.fields.forEach((field, i) => {
    if (field === "seq" || mapped.includes(field)) return;
    const values = series.points.map((p) => (typeof p[i + 1] === "boolean" ? Number(p[i + 1]) : p[i + 1]));
    if (!values.some((v) => typeof v === "number")) return;  // text fields are not charted
    const holder = el("div", { class: "chart", dataset: { field } }, el("h4", {}, field));
    box.append(holder);
    const data = [times.slice(), values];
    const plot = new uPlot({
      width: chartWidth(box), height: 170,
      series: [{}, { label: field, stroke: "#2f6fd6", width: 1.5, spanGaps: false }],
      scales: { x: { time: true, range: () => [range[0], Math.max(range[1], Date.now() / 1000)] } },
      axes: [{}, { size: 60 }], legend: { show: false },
      hooks: { draw: [(u) => markEpisodes(u)] },
    }, data, holder);
    state.charts.push({ plot, field, data });
  });
  if (mapped.length) await drawTrack(box, series);
}

// As wide as the page allows (a phone's 390 px too), and never wider: a chart that runs off
// the screen cannot be read.
function chartWidth(box) {
  return Math.max(200, box.clientWidth - 10);
}

let resizePending = false;
function resizeCharts() {
  if (resizePending) return;
  resizePending = true;
  requestAnimationFrame(() => {
    resizePending = false;
    const width = chartWidth($("charts"));
    for (const c of state.charts) c.plot.setSize({ width, height: 170 });
  });
}

function appendToCharts(ts, fields) {
  const t = Date.parse(ts) / 1000;
  appendToTrack(fields, ts);
  for (const chart of state.charts) {
    const v = fields[chart.field];
    if (v === undefined || t <= chart.data[0][chart.data[0].length - 1]) continue;
    chart.data[0].push(t); chart.data[1].push(typeof v === "boolean" ? Number(v) : v);
    chart.plot.setData(chart.data);
  }
}

async function loadEpisodes() {
  if (!state.device) return;
  const { tenant, id } = state.device;
  const { episodes } = await api("/api/episodes", { tenant, device: id, since: state.since });
  state.episodes = episodes;
  $("episodes").replaceChildren(...(episodes.length ? episodes.map((e) => el("li", { class: e.severity },
    el("a", { href: `#/alert/${e.id}` }, `${e.rule} (${e.severity})`),
    `: ${clock(e.start)} → ${e.end ? clock(e.end) : "still open"}. ${e.message}`))
    : [el("li", { class: "muted" }, "none")]));
  state.charts.forEach((c) => markEpisodes(c.plot));
}

// Episodes are DOM bands over the plot (not canvas paint), so they can be hovered and tested.
function markEpisodes(u) {
  u.over.querySelectorAll(".episode-band").forEach((b) => b.remove());
  const [min, max] = [u.scales.x.min, u.scales.x.max];
  for (const e of state.episodes || []) {
    const start = Math.max(min, Date.parse(e.start) / 1000);
    const end = Math.min(max, e.end ? Date.parse(e.end) / 1000 : max);
    if (end < start) continue;
    const left = u.valToPos(start, "x"), right = u.valToPos(end, "x");
    const band = el("div", { class: `episode-band ${e.severity}`, title: e.message, dataset: { alertId: e.id } },
      el("span", {}, e.rule));
    band.style.left = `${left}px`; band.style.width = `${Math.max(2, right - left)}px`;
    u.over.append(band);
  }
}
