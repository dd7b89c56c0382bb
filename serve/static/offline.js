// Offline on a phone. The service worker (/sw.js) saves every API answer it passes on; when the
// network is gone it answers with the saved copy, marked `X-Moclo-Offline: 1` and with when it
// was saved (`X-Moclo-Saved-At`). This file registers the worker, shows a banner while the page
// shows saved answers (so an old view is never taken for a live one), and forgets the saved
// answers on signing out, so the next person holding the phone sees none of them.
// Loaded before app.js, whose helpers ($, clock, state, refresh, connectStream) it uses when called.
"use strict";

const SAVED_ANSWERS = "moclo-answers";  // the worker's cache of API answers (sw.js)
// Set when signing out could not reach the server: its session, whose cookie the page can
// neither read nor delete, would sign the next person in as this one once online.
const SIGN_OUT_OWED = "moclo-sign-out-owed";  // a flag in localStorage, never the session
const offline = { savedAt: null };  // when the oldest saved answer on show was saved, or null

function isOffline() {
  return offline.savedAt !== null || !navigator.onLine;
}

// Called with every answer of the API: a saved copy marks the view stale, a fresh one clears it.
function noteFreshness(response) {
  if (response.headers.get("x-moclo-offline") === "1") {
    const saved = response.headers.get("x-moclo-saved-at") || "";
    if (offline.savedAt === null || saved < offline.savedAt) offline.savedAt = saved;
  } else {
    offline.savedAt = null;
  }
  showOffline();
}

function showOffline() {
  const off = isOffline();
  const banner = $("offline");
  banner.hidden = !off;
  $("app").classList.toggle("stale-view", off);
  if (!off) return;
  banner.textContent = offline.savedAt
    ? `Offline: the last view, saved ${clock(offline.savedAt)}. Not live; it may be out of date.`
    : "Offline: not live; what is shown may be out of date.";
}

function keepOffline() {
  window.addEventListener("offline", showOffline);
  window.addEventListener("online", () => {
    offline.savedAt = null;
    showOffline();
    if (state.who) { connectStream(); refresh(); } else endOwedSession();
  });
  if (!("serviceWorker" in navigator)) return;  // served over plain http to another host
  navigator.serviceWorker.register("/sw.js").catch((error) => {
    console.warn(`moclo: no offline view in this browser: ${error.message}`);
  });
  // A first visit is served before the worker takes over: once it does, load the view again
  // through it, so that this view is the one kept.
  navigator.serviceWorker.addEventListener("controllerchange", () => { if (state.who) refresh(); });
}

async function forgetSavedAnswers() {
  if (window.caches) await caches.delete(SAVED_ANSWERS);
}

// Ends the session on the server (signing out); offline, the phone forgets the saved view now
// and ends the session as soon as it can (endOwedSession). True if the server was told.
async function endSession() {
  try {
    await fetch("/api/session", { method: "DELETE" });
  } catch {
    localStorage.setItem(SIGN_OUT_OWED, "1");
    return false;
  }
  localStorage.removeItem(SIGN_OUT_OWED);
  return true;
}

// A sign-out made offline, told to the server now; false while it still cannot be.
async function endOwedSession() {
  return localStorage.getItem(SIGN_OUT_OWED) ? endSession() : true;
}
