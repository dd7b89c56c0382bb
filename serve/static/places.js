// What a device's map shows beside its track (a hook of map.js): the places of its geofence
// and arrival rules (GET …/places: the rules in force for this device), and where the alerts
// of those rules were raised in the range, the track's point at the alert's time, labelled
// "near_home raised 15:54" and, when an automation acted on it (GET …/automation-actions),
// what it did: "→ porch_light: switch light-1 (succeeded)". Live: the track grows as positions
// arrive (map.js), and a raised marker appears when the alert is raised, its automation's
// outcome when the device it acted on answers.
// Every label is built as DOM text (el), never as HTML: rule and automation names are data.
// Loaded after map.js and before app.js, whose helpers (api, state, el) it uses when called.
"use strict";

const PLACE_COLOR = { geofence: "#8a4fd6", arrival: "#d68a1f" };

// The device map the places were drawn on, its place rules, and its raised markers' layer.
const placesShown = { map: null, device: null, rules: new Set(), raised: null, marking: null, again: false };

mapOverlays.push(async (map, device, track) => {
  const { tenant, id } = device;
  const { places } = await api(`/api/devices/${tenant}/${id}/places`);
  if (maps.track !== map) return;  // another device or range was chosen meanwhile
  const holder = map.getContainer();
  const shapes = places.map((place) => drawPlace(map, place));
  holder.dataset.places = String(places.length);
  // Fitted again so the places are seen whole beside the track (a 1 km circle around home
  // where the track ends would otherwise be cut at the map's edge).
  if (shapes.length && track.length) {
    const bounds = L.latLngBounds(track.map((p) => [p[1], p[2]]));
    shapes.forEach((shape) => bounds.extend(shape.getBounds ? shape.getBounds() : shape.getLatLng()));
    map.fitBounds(bounds, { padding: [24, 24], maxZoom: 17 });
  }
  Object.assign(placesShown, { map, device, rules: new Set(places.map((p) => p.rule)),
    raised: L.layerGroup().addTo(map) });
  await markRaisedAll();
});

// Live: an alert of one of these places' rules on this device, or a step of a command an
// automation of this tenant asked for, redraws the raised markers (what fired, and how it went).
mapLiveHooks.push((kind, payload) => {
  const { map, device, rules } = placesShown;
  if (!map || maps.track !== map || payload.tenant !== device.tenant) return null;
  const mine = kind === "alert" ? payload.device_id === device.id && rules.has(payload.rule)
    : kind === "command" && (payload.issuer || "").startsWith("automation ");
  return mine ? markRaisedAll() : null;
});

// One redraw at a time; events during one ask for one more after it.
async function markRaisedAll() {
  if (placesShown.marking) { placesShown.again = true; return placesShown.marking; }
  placesShown.marking = (async () => {
    do {
      placesShown.again = false;
      await redrawRaised();
    } while (placesShown.again);
  })();
  try { await placesShown.marking; } finally { placesShown.marking = null; }
}

async function redrawRaised() {
  const { map, device, rules, raised } = placesShown;
  const { tenant, id } = device;
  const since = state.since;
  const [{ episodes }, { actions }] = await Promise.all([
    api("/api/episodes", { tenant, device: id, since }),
    api(`/api/devices/${tenant}/${id}/automation-actions`, { since }),
  ]);
  if (maps.track !== map) return;
  raised.clearLayers();
  const marked = episodes.filter((e) => rules.has(e.rule))
    .map((e) => markRaised(raised, e, maps.points, actions.filter((a) => a.alert_id === e.id)))
    .filter(Boolean);
  map.getContainer().dataset.raised = String(marked.length);
}

function label(text, className) {
  return el("span", { class: className }, text);
}

// A geofence as its circle or polygon, an arrival rule's destination as a point; each named.
function drawPlace(map, place) {
  const style = { color: PLACE_COLOR[place.kind], weight: 2, fillOpacity: 0.08,
    className: `place place-${place.kind} place-rule-${place.rule}` };
  let shape;
  if (place.shape === "circle") shape = L.circle(place.center, { ...style, radius: place.radius_m });
  else if (place.shape === "polygon") shape = L.polygon(place.polygon, style);
  else shape = L.circleMarker(place.center, { ...style, radius: 8, fillOpacity: 0.6 });
  const arrival = place.kind === "arrival";
  const what = arrival ? `${place.rule} (destination)` : `${place.rule} (${place.where})`;
  // A destination is often a geofence's centre too (home): their names go to either side.
  shape.bindTooltip(label(what, "place-label"),
    { permanent: true, direction: arrival ? "left" : "top", className: "place-tooltip" }).addTo(map);
  return shape;
}

// The track's point nearest the alert's raise (the reading that raised it, or the bucket that
// holds it when the range is aggregated); none for an alert raised before the track begins.
function pointAt(track, iso) {
  const t = Date.parse(iso);
  if (!track.length || t < track[0][0]) return null;
  let best = track[0];
  for (const p of track) if (Math.abs(p[0] - t) < Math.abs(best[0] - t)) best = p;
  return [best[1], best[2]];
}

function hhmm(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
}

function markRaised(layer, episode, track, actions) {
  const at = pointAt(track, episode.start);
  if (!at) return null;
  const text = [`${episode.rule} raised ${hhmm(episode.start)}`];
  for (const a of actions) {
    text.push(a.kind === "notice" ? `→ ${a.automation}: notice (${a.status})`
      : a.kind === "desired" ? `→ ${a.automation}: desired state of ${a.device_id} (${a.status})`
      : `→ ${a.automation}: ${a.name} ${a.device_id} (${a.status})`);
  }
  const marker = L.circleMarker(at, { radius: 7, color: "#d23c3c", fillOpacity: 0.9,
    className: `raised-marker raised-${episode.rule}` });
  const body = el("span", { class: "raised-label", dataset: { alertId: episode.id, actions: String(actions.length) } },
    ...text.flatMap((line, i) => (i ? [el("br"), line] : [line])));
  marker.bindTooltip(body, { permanent: true, direction: "right", className: "raised-tooltip" }).addTo(layer);
  return marker;
}
