{% load static %}// Service worker: caches the app shell, shows web push notifications, answers from their buttons and sends
// answers that waited for a connection (the outbox, frontend/static/frontend/outbox.js).
//
// A push payload may carry `receipt` (posted {"event": "delivered"} when the push arrives and {"event":
// "opened"} on a plain tap, so the delivery status shows what reached the phone) and `actions` (at most two
// buttons, each with the signed answer API to post, the body and the `done` text); `queued` and `failed` are
// the texts for an answer that had to wait or was refused. The payload is kept whole in the notification's data.
importScripts("{% static 'frontend/outbox.js' %}");

const CACHE = "shell-v2";
// Personal pages are kept apart so signing out can drop them: a shared phone must not show the last
// person's page offline.
const PAGES = "pages-v1";
// outbox.js too: a page opened offline still queues an answer and sends it later.
const SHELL = [{% for url in shell %}"{{ url|escapejs }}",{% endfor %}"{% static 'frontend/outbox.js' %}"];
const ICON = "{{ shell.2|escapejs }}";

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys().then((keys) => Promise.all(keys.filter((k) => k !== CACHE && k !== PAGES).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
  // Answers queued while an older worker ran (or the browser was closed): send them now. Not part of the
  // activation, which must not wait on the network.
  flushOutbox();
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

// --- Push: show it, and say it arrived ----------------------------------------------------------------------
function receipt(data, event) {
  if (!data || !data.receipt) return Promise.resolve(null);
  // Never in the way of the notification: a failed receipt only leaves the status at "sent".
  return fetch(data.receipt, {
    method: "POST",
    credentials: "omit",  // the token in the address is the credential
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ event, channel: "push" }),
  }).then((r) => r.status, () => null);
}

function actionsOf(data) {
  return Array.isArray(data && data.actions) ? data.actions.filter((a) => a && a.action && a.post).slice(0, 2) : [];
}

async function shownRound(data) {
  // The round of the safety request already on screen under this tag, if any.
  if (!data.tag || data.kind !== "safety") return null;
  const shown = await self.registration.getNotifications({ tag: data.tag }).catch(() => []);
  const rounds = shown.map((n) => n.data && n.data.round).filter((r) => r !== undefined && r !== null);
  return rounds.length ? rounds[0] : null;
}

async function show(data) {
  // An instruction (対策指示, tag instruction-<id>) is an order from the crisis team: like a safety request it
  // stays on screen until tapped. Each has its own tag, so a second one never replaces the first.
  const instruction = /^instruction-\d+$/.test(data.tag || "");
  // A resend or an escalation (the next round) alerts again under the same tag; the same round arriving twice
  // (a batch repeated after a worker crashed) quietly replaces the one on screen.
  const repeat = data.round !== undefined && (await shownRound(data)) === data.round;
  return self.registration.showNotification(data.title || "Tsunagu", {
    body: data.body || "",
    tag: data.tag || undefined,
    // A safety request stays on screen until tapped, and a resend alerts again under the same tag.
    requireInteraction: Boolean(data.requireInteraction) || instruction,
    renotify: Boolean(data.tag && data.kind === "safety") && !repeat,
    // Buttons show only their title; what each posts stays in `data`.
    actions: actionsOf(data).map((a) => ({ action: a.action, title: String(a.title || a.action) })),
    data: { ...data, url: data.url || "/" },
    icon: ICON,
  });
}

function onPush(data) {
  return Promise.all([show(data), receipt(data, "delivered")]);
}

self.addEventListener("push", (event) => {
  let data = {};
  try { data = event.data ? event.data.json() : {}; } catch (e) { data = { title: event.data.text() }; }
  event.waitUntil(onPush(data));
});

// --- Answering from a notification button --------------------------------------------------------------------
// A short notification in place of the one answered (same tag): "sent", "will be sent", or "could not".
function confirmation(data, text) {
  return self.registration.showNotification(data.title || "Tsunagu", {
    body: text || "",
    tag: data.tag || undefined,
    requireInteraction: false,
    data: { url: data.url || "/" },
    icon: ICON,
  });
}

// Send one item through the outbox (behind the answers already waiting there) and say how its post went:
// {status, json}, status 0 while it is still waiting.
async function throughOutbox(item) {
  let found = null;
  const stop = self.TsunaguOutbox.onResult((result) => { if (result.id === item.id) found = result; });
  try {
    await self.TsunaguOutbox.add(item);
    await flushOutbox();
  } catch { /* no storage: reported as not sent */ } finally {
    stop();
  }
  return found ? { status: found.status, json: found.json || {} } : { status: 0, json: {} };
}

// Post the answer a button stands for. 2xx: "done". No connection, 5xx, 408 or 429: into the outbox (sent on
// the next flush: Background Sync, `online` in a page, the next start) and "queued". Any other 4xx (answers
// closed, link expired): "failed", so the person opens the page instead. Resolves to what happened.
async function answer(data, name) {
  const action = actionsOf(data).find((a) => a.action === name);
  if (!action) return { state: "unknown" };
  const key = self.TsunaguOutbox.uuid();
  const item = {
    id: key,
    url: action.post,
    body: { ...(action.body || {}), client_key: key },
    label: String(action.title || action.action),
    incident: data.incident,
    created_at: new Date().toISOString(),
    tries: 1,
  };
  // An earlier answer to the same request still waits: this one goes behind it, or the earlier one would
  // arrive last and win.
  const earlier = (await self.TsunaguOutbox.list().catch(() => [])).some((i) => i.url === item.url);
  const { status, json } = earlier ? await throughOutbox(item) : await self.TsunaguOutbox.post(item);
  if (status >= 200 && status < 300) {
    await confirmation(data, action.done);
    return { state: "done", status };
  }
  if (self.TsunaguOutbox.retryable(status)) {
    try {
      // Said again when a later flush sends it (or cannot), since no page may be open then.
      await self.TsunaguOutbox.add({
        ...item,
        notify: { title: data.title, tag: data.tag, url: data.url, done: action.done, failed: data.failed },
      });
    } catch {
      await confirmation(data, data.failed);  // no storage: nothing will send it later
      return { state: "failed", status };
    }
    await self.TsunaguOutbox.sync();
    await confirmation(data, data.queued);
    return { state: "queued", status };
  }
  const message = json && typeof json.message === "string" ? json.message : "";
  await confirmation(data, [data.failed, message].filter(Boolean).join("\n"));
  return { state: "failed", status, message };
}

// A plain tap: say it was opened, and open the page (or bring the open one forward).
async function tap(data) {
  const url = (data && data.url) || "/";
  const opened = receipt(data, "opened");
  const windows = await self.clients.matchAll({ type: "window" });
  // The notification's URL carries ?via=push: compare paths, or an open answer page is never reused.
  const path = new URL(url, self.location.origin).pathname;
  const found = windows.find((w) => new URL(w.url).pathname === path);
  const shown = found ? found.focus() : self.clients.openWindow(url);
  await Promise.all([opened, shown.catch(() => null)]);
}

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const data = event.notification.data || {};
  if (event.action && actionsOf(data).some((a) => a.action === event.action)) {
    event.waitUntil(answer(data, event.action));
  } else {
    event.waitUntil(tap(data));
  }
});

// --- The outbox ----------------------------------------------------------------------------------------------
// What a flush in here sent (or could not) is said in a notification when no page is on screen to say it.
self.TsunaguOutbox.onResult(async (result) => {
  const notify = result.notify;
  if (!notify) return;
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  if (windows.some((w) => w.visibilityState === "visible")) return;
  const text = result.ok ? notify.done : [notify.failed, result.json && result.json.message].filter(Boolean).join("\n");
  if (text) await confirmation(notify, text).catch(() => null);  // no permission: nothing to say it with
});

async function flushOutbox() {
  try {
    return await self.TsunaguOutbox.flush();
  } catch (err) {
    console.warn("outbox:", err);
    return { sent: 0, dropped: 0, kept: 0 };
  }
}

self.addEventListener("sync", (event) => {
  if (event.tag !== self.TsunaguOutbox.TAG) return;
  // Rejecting tells the browser to try again later (with its own back-off) while answers are still waiting.
  event.waitUntil(flushOutbox().then((outcome) => {
    if (outcome.kept) throw new Error(`${outcome.kept} answer(s) still waiting for a connection`);
  }));
});

self.addEventListener("message", (event) => {
  if (event.data && event.data.type === "flush") event.waitUntil(flushOutbox());
});

// For tests (Playwright's service worker handle): the handlers without their events.
self.tsunaguPush = onPush;
self.tsunaguAnswer = answer;
self.tsunaguOpen = tap;
self.tsunaguFlush = flushOutbox;
