// The dashboard's service worker: it keeps the last view readable without a network.
// - The page and its files (the shell): from the network when it answers, so a new version
//   shows at once; else the copy saved at install or on the last visit.
// - GET /api/* answers: from the network, each successful one saved (its URL is the key, so
//   each tenant, device and range has its own); without a network, the saved copy, marked
//   `X-Moclo-Offline: 1` with `X-Moclo-Saved-At` for the page's offline banner (offline.js).
//   A 401 (signed out, session ended, token revoked) forgets every saved answer at once, and so
//   does signing in or out (POST or DELETE /api/session, which pass here on their way): the
//   saved answers were the person's before. An answer that was on its way meanwhile is passed
//   on but not saved: it belongs to whoever was signed in when it was asked for.
// - Nothing else is kept: not an acknowledgement link's page (/ack/…), whose token must not
//   linger in a cache.
// - The live stream and every other change (POST, PUT, DELETE) pass through untouched: a change
//   offline fails, and says so, rather than waiting to surprise someone later.
// It is served from / (serve/routes/service.py) because a worker controls only pages at or
// below its own path.
"use strict";

const SHELL = "moclo-shell-2";        // a new name when the list below changes
const ANSWERS = "moclo-answers";      // offline.js forgets it on signing out
let signings = 0;  // sign-ins, sign-outs and 401s this worker saw: an answer asked for before one is not kept
const SHELL_FILES = [
  "/", "/manifest.webmanifest", "/static/style.css", "/static/offline.js", "/static/map.js",
  "/static/places.js", "/static/commands.js", "/static/alerts.js", "/static/device.js",
  "/static/notifications.js", "/static/app.js",
  "/static/vendor/uPlot.min.css", "/static/vendor/uPlot.iife.min.js",
  "/static/vendor/leaflet/leaflet.css", "/static/vendor/leaflet/leaflet.js",
  "/static/icons/icon.svg", "/static/icons/icon-192.png",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL).then((cache) => cache.addAll(SHELL_FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  const old = (name) => name.startsWith("moclo-shell-") && name !== SHELL;
  event.waitUntil(caches.keys()
    .then((names) => Promise.all(names.filter(old).map((name) => caches.delete(name))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (url.pathname === "/api/session" && request.method !== "GET") {
    event.respondWith(forgetThen(request));
    return;
  }
  if (request.method !== "GET") return;
  if (url.pathname === "/api/stream") return;
  if (url.pathname.startsWith("/api/")) event.respondWith(answer(request));
  else if (SHELL_FILES.includes(url.pathname)) event.respondWith(shell(request, url));
  // Anything else (an acknowledgement link's page, a file not listed) is the network's alone.
});

async function forgetThen(request) {
  signings += 1;
  await caches.delete(ANSWERS);
  return fetch(request);
}

async function answer(request) {
  const asked = signings;
  let response;
  try {
    response = await fetch(request);
  } catch (offline) {
    const saved = await caches.match(request, { cacheName: ANSWERS });
    if (!saved) throw offline;
    const headers = new Headers(saved.headers);
    headers.set("x-moclo-offline", "1");
    return new Response(saved.body, { status: saved.status, statusText: saved.statusText, headers });
  }
  if (response.status === 401) {
    signings += 1;
    await caches.delete(ANSWERS);
  } else if (response.ok) {
    const headers = new Headers(response.headers);
    headers.set("x-moclo-saved-at", new Date().toISOString());
    const copy = new Response(await response.clone().blob(), { status: response.status, headers });
    if (asked === signings) await (await caches.open(ANSWERS)).put(request, copy);
  }
  return response;
}

async function shell(request, url) {
  try {
    const response = await fetch(request);
    if (response.ok) await (await caches.open(SHELL)).put(url.pathname, response.clone());
    return response;
  } catch (offline) {
    const saved = await caches.match(request.mode === "navigate" ? "/" : url.pathname, { cacheName: SHELL });
    if (!saved) throw offline;
    return saved;
  }
}
