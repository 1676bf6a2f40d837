// The offline outbox: answers that could not be sent, kept in the browser and sent when the connection
// returns. A classic script (no module), so the service worker loads it with importScripts() and every page
// with a plain <script>; it defines `self.TsunaguOutbox` in either.
//
// IndexedDB database `tsunagu`, store `outbox`, keyPath `id`. An item is
//   {id, url, body, label, created_at, tries}   (+ optional `incident`, and `notify` for the service worker)
// where `id` is the answer's client_key (also in `body.client_key`): the server stores an answer once per
// key, so a post that reached the server but whose reply was lost is harmless to send again. `url` is a signed
// link API (the token is the credential), so sending needs no session or CSRF token and works from the service
// worker too (credentials "omit").
//
// flush() posts the items oldest first: 2xx, or a 4xx the server will never accept (closed, expired link),
// removes the item; a network error, 5xx, 408 or 429 keeps it for the next flush. Flushes are single-flight:
// across pages and the service worker through the Web Lock `tsunagu-outbox` where there is one, within one
// page or worker always (a flush asked for while one runs runs once more after it). Each final outcome is told
// to onResult() listeners here and, through the BroadcastChannel `tsunagu-outbox`, in every other page and
// the service worker, so the page that queued an answer learns it was sent whoever sent it.
//
// Pages that load this with `data-autoflush` flush on start and on `online`, and ask the service worker to do
// the same (Background Sync, where the browser has it, covers a page that is closed meanwhile).
(function (scope) {
  "use strict";

  const DB_NAME = "tsunagu";
  const STORE = "outbox";
  const TAG = "tsunagu-outbox";  // Web Lock name, Background Sync tag and BroadcastChannel name
  // A post that hangs on a bad network must not hold the lock for ever; but in a burst the server queues a
  // request for up to HTTP_QUEUE_SECONDS (50 s) before it answers 503 with Retry-After: wait longer than that.
  const TIMEOUT_MS = 65000;

  let dbPromise = null;
  let running = null;            // the flush under way in this page or worker
  let again = false;             // a flush was asked for while one ran
  const listeners = new Set();
  const channel = typeof BroadcastChannel === "function" ? new BroadcastChannel(TAG) : null;

  function uuid() {
    if (scope.crypto && typeof scope.crypto.randomUUID === "function") return scope.crypto.randomUUID();
    const b = scope.crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function retryable(status) {
    return !status || status >= 500 || status === 408 || status === 429;
  }

  // --- IndexedDB ---------------------------------------------------------------------------------------
  function open() {
    if (!dbPromise) {
      dbPromise = new Promise((resolve, reject) => {
        const request = indexedDB.open(DB_NAME, 1);
        request.onupgradeneeded = () => {
          if (!request.result.objectStoreNames.contains(STORE)) request.result.createObjectStore(STORE, { keyPath: "id" });
        };
        request.onsuccess = () => {
          const db = request.result;
          // Another version opened elsewhere (a newer script): let it upgrade, open again next time.
          db.onversionchange = () => { db.close(); dbPromise = null; };
          resolve(db);
        };
        request.onerror = () => reject(request.error);
        request.onblocked = () => reject(new Error("outbox database blocked"));
      }).catch((err) => { dbPromise = null; throw err; });
    }
    return dbPromise;
  }

  async function transact(mode, work) {
    const db = await open();
    return new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = work(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request ? request.result : undefined);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error || new Error("outbox transaction aborted"));
    });
  }

  async function add(item) {
    const id = String(item.id || (item.body && item.body.client_key) || uuid());
    if (!item.url) throw new Error("an outbox item needs a url");
    const stored = {
      ...item,
      id,
      body: { ...(item.body || {}), client_key: id },
      label: item.label || "",
      created_at: item.created_at || new Date().toISOString(),
      tries: item.tries || 0,
    };
    await transact("readwrite", (store) => store.put(stored));
    return stored;
  }

  async function list() {
    const items = (await transact("readonly", (store) => store.getAll())) || [];
    // Oldest first: a later answer must reach the server after an earlier one, or it would be overwritten.
    return items.sort((a, b) => String(a.created_at).localeCompare(String(b.created_at)));
  }

  async function count() {
    return (await transact("readonly", (store) => store.count())) || 0;
  }

  function remove(id) {
    return transact("readwrite", (store) => store.delete(id));
  }

  function put(item) {
    return transact("readwrite", (store) => store.put(item));
  }

  // --- Results -----------------------------------------------------------------------------------------
  // Listeners may be async (the service worker shows a notification): a flush waits for them, so the worker
  // is kept alive (its event's waitUntil) until they are done.
  function tell(result) {
    return Promise.allSettled([...listeners].map(async (fn) => fn(result))).then((outcomes) => {
      for (const o of outcomes) if (o.status === "rejected") console.warn("outbox listener:", o.reason);
    });
  }

  function announce(result) {
    // A BroadcastChannel never hears its own messages: the listeners here are told directly.
    if (channel) channel.postMessage({ type: "outbox-result", result });
    return tell(result);
  }

  if (channel) {
    channel.onmessage = (event) => {
      if (event.data && event.data.type === "outbox-result") tell(event.data.result);
    };
  }

  function onResult(fn) {
    listeners.add(fn);
    return () => listeners.delete(fn);
  }

  // --- Sending -----------------------------------------------------------------------------------------
  async function post(item) {
    const controller = typeof AbortController === "function" ? new AbortController() : null;
    const timer = controller ? setTimeout(() => controller.abort(), TIMEOUT_MS) : null;
    try {
      const response = await fetch(item.url, {
        method: "POST",
        credentials: "omit",  // the signed link is the credential, not whoever is signed in on this browser
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(item.body),
        signal: controller ? controller.signal : undefined,
      });
      const json = await response.json().catch(() => ({}));
      return { status: response.status, json };
    } catch {
      return { status: 0, json: {} };  // no connection (or it timed out)
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  async function flushOnce() {
    const outcome = { sent: 0, dropped: 0, kept: 0 };
    let items;
    try { items = await list(); } catch { return outcome; }  // no IndexedDB here: nothing was ever queued
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      const { status, json } = await post(item);
      if (retryable(status)) {
        item.tries = (item.tries || 0) + 1;
        await put(item).catch(() => {});
        outcome.kept += 1;
        if (!status) { outcome.kept += items.length - i - 1; break; }  // offline: the rest would fail alike
        continue;
      }
      await remove(item.id).catch(() => {});
      const ok = status >= 200 && status < 300;
      outcome[ok ? "sent" : "dropped"] += 1;
      const { body, ...rest } = item;
      await announce({ ...rest, values: body && body.values, ok, status, json });
    }
    return outcome;
  }

  function locked(work) {
    const locks = scope.navigator && scope.navigator.locks;
    return locks && typeof locks.request === "function" ? locks.request(TAG, work) : work();
  }

  function flush() {
    if (running) { again = true; return running; }
    running = (async () => {
      const total = { sent: 0, dropped: 0, kept: 0 };
      do {
        again = false;
        const outcome = await locked(flushOnce);
        total.sent += outcome.sent;
        total.dropped += outcome.dropped;
        total.kept = outcome.kept;
      } while (again);
      return total;
    })().finally(() => { running = null; });
    return running;
  }

  // Ask for a Background Sync, so the service worker sends what is left when the connection returns even if
  // no page is open then. Chrome has it; elsewhere the `online` event and the next start do the work.
  async function sync() {
    try {
      const registration = scope.registration
        || (scope.navigator && scope.navigator.serviceWorker && (await scope.navigator.serviceWorker.getRegistration()));
      if (registration && registration.sync) await registration.sync.register(TAG);
      return Boolean(registration && registration.sync);
    } catch {
      return false;
    }
  }

  // post({url, body}) → {status, json}: one post as a flush makes it (status 0: no connection or timed out).
  scope.TsunaguOutbox = { add, flush, count, list, remove, onResult, sync, retryable, uuid, post, TAG };

  // --- Pages: flush on start and on `online` --------------------------------------------------------------
  const script = typeof document !== "undefined" ? document.currentScript : null;
  if (script && "autoflush" in script.dataset) {
    // Lists that show a request (the person's open safety checks) mark one with an answer still queued: an
    // element with data-outbox-incident="<id>" shows its [data-outbox-queued] child while an answer to that
    // incident waits, and its [data-outbox-sent] child once one was sent.
    const sentIncidents = new Set();
    const markPending = async () => {
      const marked = document.querySelectorAll("[data-outbox-incident]");
      if (!marked.length) return;
      let items = [];
      try { items = await list(); } catch { /* no IndexedDB: nothing queued */ }
      const waiting = new Set(items.map((i) => String(i.incident || "")));
      for (const el of marked) {
        const id = el.dataset.outboxIncident;
        const queued = el.querySelector("[data-outbox-queued]");
        const sent = el.querySelector("[data-outbox-sent]");
        if (queued) queued.hidden = !waiting.has(id);
        if (sent) sent.hidden = waiting.has(id) || !sentIncidents.has(id);
      }
    };
    onResult((result) => {
      if (result.ok && result.incident) sentIncidents.add(String(result.incident));
      markPending();
    });

    const kick = async () => {
      try {
        if (!(await count())) return;
      } catch {
        return;  // no IndexedDB (a private window in some browsers): nothing can have been queued
      }
      const controller = navigator.serviceWorker && navigator.serviceWorker.controller;
      if (controller) controller.postMessage({ type: "flush" });
      const outcome = await flush();
      if (outcome.kept) await sync();
    };
    scope.TsunaguOutbox.kick = kick;
    const start = () => { markPending(); kick(); };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
    else start();
    scope.addEventListener("online", kick);
  }
})(self);
