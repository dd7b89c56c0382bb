// Positions on a map instead of lat/lon as two time series: a device's track over the chosen
// range, and a fleet's latest positions (the herd in its pasture). Leaflet 1.9.4 (vendored,
// see static/vendor/README) draws them. The tile server is a setting (MOCLO_MAP_TILES, told
// by GET /api/map); without one, the points and tracks are drawn on a plain background with a
// scale, which is how the page is tested: our machines reach no tile server.
// Loaded before app.js, whose helpers (api, state, el) it uses when called.
"use strict";

const maps = {
  setting: null, fleet: null, fleetLayer: null, fleetFitted: "", fleetMarkers: new Map(),
  track: null, line: null, points: [],
};
// Hooks for what is drawn over a device's map (places.js: its geofences, and where their
// alerts were raised): each is called with (map, {tenant, id}, track) after the track, where
// track is [[time in ms, lat, lon], ...] oldest first; positions that arrive live are
// appended to that same array.
const mapOverlays = [];
// Hooks told of live events while a device's map is shown, called with (kind, payload):
// "alert" (an alert change of any device) and "command" (a step of any command), so an
// automation's firing point appears on the map when it fires (places.js).
const mapLiveHooks = [];

function tellMap(kind, payload) {
  if (!maps.track) return;
  for (const hook of mapLiveHooks) Promise.resolve(hook(kind, payload)).catch(showError);
}

function hasPosition(fields) {
  return fields.includes("lat") && fields.includes("lon");
}

async function mapSetting() {
  if (!maps.setting) maps.setting = await api("/api/map");
  return maps.setting;
}

function newMap(holder, setting) {
  const map = L.map(holder, { attributionControl: Boolean(setting.tiles), zoomSnap: 0.25 });
  if (setting.tiles) L.tileLayer(setting.tiles, { maxZoom: 19, attribution: setting.attribution || "" }).addTo(map);
  L.control.scale({ imperial: false }).addTo(map);
  map.setView([0, 0], 2);
  return map;
}

function fit(map, latlngs) {
  if (latlngs.length === 1) map.setView(latlngs[0], 15);
  else if (latlngs.length > 1) map.fitBounds(L.latLngBounds(latlngs), { padding: [24, 24], maxZoom: 17 });
}

// A device's track: the stored positions of the range (points [time, ..., lat, ..., lon]).
async function drawTrack(box, series) {
  const setting = await mapSetting();
  const lat = series.fields.indexOf("lat") + 1, lon = series.fields.indexOf("lon") + 1;
  const placed = series.points.filter((p) => typeof p[lat] === "number" && typeof p[lon] === "number");
  const latlngs = placed.map((p) => [p[lat], p[lon]]);
  const track = placed.map((p) => [Date.parse(p[0]), p[lat], p[lon]]);
  const holder = el("div", { class: "map track-map", dataset: { points: String(latlngs.length) } });
  box.prepend(el("div", { class: "chart", dataset: { field: "position" } }, el("h4", {}, "position"), holder));
  const map = newMap(holder, setting);
  maps.track = map;
  maps.points = track;
  maps.line = L.polyline(latlngs, { color: "#2f6fd6", weight: 3 }).addTo(map);
  if (latlngs.length) {
    L.circleMarker(latlngs[0], { radius: 5, color: "#6b7485" }).bindTooltip("start of range").addTo(map);
    maps.last = L.circleMarker(latlngs[latlngs.length - 1], { radius: 7, color: "#2f6fd6", fillOpacity: 0.9 })
      .bindTooltip("latest").addTo(map);
  }
  fit(map, latlngs);
  // Not awaited: the charts and episodes need not wait for what is drawn over the map.
  for (const overlay of mapOverlays) Promise.resolve(overlay(map, state.device, track)).catch(showError);
}

function appendToTrack(fields, ts) {
  if (!maps.track || typeof fields.lat !== "number" || typeof fields.lon !== "number") return;
  const at = [fields.lat, fields.lon];
  maps.line.addLatLng(at);
  maps.points.push([Date.parse(ts), ...at]);
  holderCount(maps.track, 1);
  if (maps.last) maps.last.setLatLng(at);
  else maps.last = L.circleMarker(at, { radius: 7, color: "#2f6fd6", fillOpacity: 0.9 }).bindTooltip("latest").addTo(maps.track);
}

function holderCount(map, more) {
  const holder = map.getContainer();
  holder.dataset.points = String(Number(holder.dataset.points) + more);
}

function forgetTrack() {
  if (maps.track) maps.track.remove();
  maps.track = null; maps.line = null; maps.last = null; maps.points = [];
}

// The fleet's latest positions, one marker per device with a position; red with open alerts.
// Called again as readings arrive (app.js, at most once a second): a device's marker is kept
// and moved, so its tooltip and the reader's view stay as they were.
async function drawFleetMap(devices) {
  const placed = devices.filter((d) => typeof d.last.lat === "number" && typeof d.last.lon === "number");
  const holder = $("fleet-map");
  holder.hidden = placed.length === 0;
  if (!placed.length) return;
  if (!maps.fleet) {
    maps.fleet = newMap(holder, await mapSetting());
    maps.fleetLayer = L.layerGroup().addTo(maps.fleet);
  }
  maps.fleet.invalidateSize();
  const shown = new Set();
  for (const d of placed) {
    const key = `${d.tenant}/${d.device_id}`;
    shown.add(key);
    const color = d.open_alerts ? "#d23c3c" : "#2e9b57";
    const known = maps.fleetMarkers.get(key);
    if (known) { known.setLatLng([d.last.lat, d.last.lon]); known.setStyle({ color }); continue; }
    const marker = L.circleMarker([d.last.lat, d.last.lon], {
      radius: 6, color, fillOpacity: 0.8, className: `device-${d.device_id}`,
    }).bindTooltip(`${d.device_id} (${d.device_type})`)
      .on("click", () => { location.hash = `#/device/${d.tenant}/${d.device_id}`; })
      .addTo(maps.fleetLayer);
    maps.fleetMarkers.set(key, marker);
  }
  for (const [key, marker] of maps.fleetMarkers) {
    if (!shown.has(key)) { marker.remove(); maps.fleetMarkers.delete(key); }
  }
  holder.dataset.markers = String(placed.length);
  // Fitted once per choice of tenant, so live updates do not undo the reader's panning.
  const key = `${state.tenant}|${placed.length}`;
  if (maps.fleetFitted !== key) { maps.fleetFitted = key; fit(maps.fleet, placed.map((d) => [d.last.lat, d.last.lon])); }
}
