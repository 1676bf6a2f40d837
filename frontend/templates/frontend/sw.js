// Service worker: caches the app shell, shows web push notifications and opens them.
const CACHE = "shell-v1";
// Personal pages are kept apart so signing out can drop them: a shared phone must not show the last
// person's page offline.
const PAGES = "pages-v1";
const SHELL = [{% for url in shell %}"{{ url|escapejs }}",{% endfor %}];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys().then((keys) => Promise.all(keys.filter((k) => k !== CACHE && k !== PAGES).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin) return;
  if (url.pathname.startsWith("/static/")) {
    // Static files: cache first, refreshed in the background.
    event.respondWith(
      caches.match(event.request).then((hit) => {
        const fresh = fetch(event.request).then((res) => {
          if (res.ok) caches.open(CACHE).then((c) => c.put(event.request, res.clone()));
          return res;
        });
        return hit || fresh;
      }),
    );
  } else if (event.request.mode === "navigate") {
    // Pages: always the network (they are personal), the cached page only when offline.
    event.respondWith(
      fetch(event.request).then((res) => {
        // A signed answer link is never kept: its address is the credential (the page is sent no-store).
        if (res.ok && !/^\/[^/]+\/answer\//.test(url.pathname)) {
          const copy = res.clone();
          caches.open(PAGES).then((c) => c.put(event.request, copy));
        }
        return res;
      }).catch(() => caches.open(PAGES).then((c) => c.match(event.request)).then((hit) => hit || new Response(
        "<!doctype html><meta charset=utf-8><title>Offline</title><p>オフラインです / You are offline.</p>",
        { headers: { "Content-Type": "text/html; charset=utf-8" } },
      ))),
    );
  }
});

self.addEventListener("push", (event) => {
  let data = {};
  try { data = event.data ? event.data.json() : {}; } catch (e) { data = { title: event.data.text() }; }
  // An instruction (対策指示, tag instruction-<id>) is an order from the crisis team: like a safety request it
  // stays on screen until tapped. Each has its own tag, so a second one never replaces the first.
  const instruction = /^instruction-\d+$/.test(data.tag || "");
  event.waitUntil(self.registration.showNotification(data.title || "Tsunagu", {
    body: data.body || "",
    tag: data.tag || undefined,
    // A safety request stays on screen until tapped, and a resend alerts again under the same tag.
    requireInteraction: Boolean(data.requireInteraction) || instruction,
    renotify: Boolean(data.tag && data.kind === "safety"),
    data: { url: data.url || "/" },
    icon: "{{ shell.2|escapejs }}",
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = (event.notification.data && event.notification.data.url) || "/";
  event.waitUntil(self.clients.matchAll({ type: "window" }).then((windows) => {
    // The notification's URL carries ?via=push: compare paths, or an open answer page is never reused.
    const path = new URL(url, self.location.origin).pathname;
    for (const w of windows) if (new URL(w.url).pathname === path) return w.focus();
    return self.clients.openWindow(url);
  }));
});
