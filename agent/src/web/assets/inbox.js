// Portcullis inbox: live updates over server-sent events and countdowns. The page
// works without this script; it only saves a reload.
"use strict";
(function () {
  const list = document.getElementById("inbox");
  const live = document.getElementById("live");
  if (!list) return;
  function tick() {
    for (const el of list.querySelectorAll("[data-expires]")) {
      const left = Math.max(0, Math.round((Number(el.dataset.expires) - Date.now()) / 1000));
      el.textContent = left + " s";
    }
  }
  let pending = false;
  function busy() {
    const el = document.activeElement;
    return el && list.contains(el) && el.tagName === "INPUT" && el.value !== "";
  }
  async function refresh() {
    if (busy()) { pending = true; return; }
    pending = false;
    const r = await fetch("/inbox", { credentials: "same-origin", cache: "no-store" });
    if (r.status === 401) { location.reload(); return; }
    if (r.ok) { list.innerHTML = await r.text(); list.dataset.fresh = String(Date.now()); tick(); }
  }
  list.addEventListener("focusout", function () { if (pending) setTimeout(refresh, 0); });
  const events = new EventSource("/events");
  events.addEventListener("request", refresh);
  events.addEventListener("open", function () {
    live.dataset.live = "on";
    live.textContent = "Live: new requests and decisions appear here as they happen.";
    refresh();
  });
  events.addEventListener("error", function () {
    live.dataset.live = "off";
    live.textContent = "Live updates paused; reconnecting…";
  });
  setInterval(tick, 1000);
  tick();
})();
