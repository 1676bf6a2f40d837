// The PWA shell: the live connection (with reconnect, sequence tracking and snapshots), the connection
// banner, the service worker, and web push subscription. No build step; served as an ES module.

const body = document.body;
const org = body.dataset.org;

function csrfToken() {
  const m = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

export async function api(path, { method = "GET", data } = {}) {
  const response = await fetch(`/${org}/api/${path}`, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: data === undefined ? undefined : JSON.stringify(data),
  });
  const json = await response.json().catch(() => ({}));
  if (!response.ok) throw Object.assign(new Error(json.message || response.statusText), { status: response.status, body: json });
  return json;
}

// --- Page behaviours the Content-Security-Policy keeps out of the templates ----------------------------
// No inline style or handler is allowed (config/security.py), so pages say what they need in data attributes:
// data-width="42.5" (a bar's width in %), data-depth="2" (a department's indent; app.css covers 0-9 before this
// runs), data-confirm-submit="question?" on a form, data-print on a button.
for (const node of document.querySelectorAll("[data-width]")) node.style.width = `${Number(node.dataset.width) || 0}%`;
for (const node of document.querySelectorAll("[data-depth]")) node.style.setProperty("--depth", String(Number(node.dataset.depth) || 0));
document.addEventListener("submit", (event) => {
  const question = event.target instanceof HTMLFormElement ? event.target.dataset.confirmSubmit : undefined;
  if (question && !window.confirm(question)) event.preventDefault();
});
document.addEventListener("click", (event) => {
  if (event.target instanceof Element && event.target.closest("[data-print]")) window.print();
});

// --- Connection banner -------------------------------------------------------------------------------
const banner = document.getElementById("connection");
let hideTimer = null;
function showConnection(state) {
  if (!banner) return;
  body.dataset.connection = state;
  clearTimeout(hideTimer);
  const reconnecting = banner.querySelector('[data-state="reconnecting"]');
  const back = banner.querySelector('[data-state="back"]');
  if (state === "reconnecting") {
    banner.hidden = false;
    banner.classList.remove("connection-ok");
    reconnecting.hidden = false;
    back.hidden = true;
  } else if (state === "open" && !banner.hidden) {
    banner.classList.add("connection-ok");
    reconnecting.hidden = true;
    back.hidden = false;
    hideTimer = setTimeout(() => { banner.hidden = true; }, 2000);
  }
}

// --- Live connection ---------------------------------------------------------------------------------
const handlers = {};
export function onEvent(type, fn) { (handlers[type] ||= []).push(fn); }
function emit(type, payload) {
  for (const fn of handlers[type] || []) fn(payload);
  document.dispatchEvent(new CustomEvent("live", { detail: payload }));
}

export class Live {
  constructor(streams) {
    this.streams = streams;
    this.seq = {};                 // stream -> last sequence number applied
    this.attempt = 0;
    this.closedForGood = false;
    this.everOpened = false;
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/${org}/ws/`);
    this.ws = ws;
    ws.onopen = () => {
      // Reset the back-off only once the connection has lasted, so a server that accepts and drops at once
      // is not hammered.
      clearTimeout(this.stableTimer);
      this.stableTimer = setTimeout(() => { this.attempt = 0; }, 10000);
      if (this.everOpened) showConnection("open");
      this.everOpened = true;
      body.dataset.live = "open";
      for (const stream of this.streams) this.subscribe(stream);
      clearInterval(this.pinger);
      this.lastHeard = Date.now();
      this.pinger = setInterval(() => {
        // A half-open connection (a phone changing networks) never errors: if nothing came back since the
        // last ping, drop it and reconnect; catch-up by sequence number restores what was missed.
        if (Date.now() - this.lastHeard > 35000) { ws.close(); return; }
        this.send({ type: "ping" });
      }, 25000);
    };
    ws.onmessage = (e) => { this.lastHeard = Date.now(); this.receive(JSON.parse(e.data)); };
    ws.onclose = (e) => {
      clearInterval(this.pinger);
      clearTimeout(this.stableTimer);
      body.dataset.live = "closed";
      if (e.code === 4401) { location.href = `/${org}/?next=${encodeURIComponent(location.pathname)}`; return; }
      if (e.code === 4403) {
        if (location.pathname !== `/${org}/password/`) location.href = `/${org}/password/`;
        return;
      }
      if (e.code === 4404 || this.closedForGood) return;
      showConnection("reconnecting");
      // Back off with jitter so a restarted server isn't hit by every client at once.
      const delay = Math.min(30000, 500 * 2 ** this.attempt++) * (0.5 + Math.random() / 2);
      setTimeout(() => this.connect(), delay);
    };
  }

  send(frame) { if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame)); }

  subscribe(stream) {
    const last = this.seq[stream];
    this.send({ type: "subscribe", stream, last_seq: last === undefined ? null : last });
  }

  // Follow one more stream from this page on (a room that was opened or added). `lastSeq` is where the
  // page's own data stands, so only later events are sent; null asks for a snapshot. Until the socket is
  // open this only records the stream: opening subscribes every stream.
  follow(stream, lastSeq = null) {
    if (this.streams.includes(stream)) return;
    this.streams.push(stream);
    if (lastSeq !== null && lastSeq !== undefined) this.seq[stream] = lastSeq;
    this.subscribe(stream);
  }

  // Stop following a stream (a room the person left); a reconnect no longer asks for it.
  unfollow(stream) {
    if (!this.streams.includes(stream)) return;
    this.streams = this.streams.filter((s) => s !== stream);
    delete this.seq[stream];
    this.send({ type: "unsubscribe", stream });
  }

  receive(frame) {
    if (frame.type === "snapshot") {
      this.seq[frame.stream] = frame.seq;
      emit(`snapshot:${frame.stream.split(".")[0]}`, frame);
    } else if (frame.type === "event") {
      if (frame.seq !== null) {
        const last = this.seq[frame.stream] ?? 0;
        if (frame.seq <= last) return;                       // seen already
        if (frame.seq > last + 1) { this.subscribe(frame.stream); return; }  // a gap: ask for what we missed
        this.seq[frame.stream] = frame.seq;
      }
      emit(frame.event, frame);
    } else if (frame.type === "error") {
      console.warn("live:", frame.code, frame.message);
    }
    emit(`frame:${frame.type}`, frame);
  }
}

// --- Home page: notices ------------------------------------------------------------------------------
function renderNotice(n) {
  const li = document.createElement("li");
  li.className = "notice notice-new";
  li.dataset.id = n.id;
  const title = document.createElement("strong");
  title.className = "notice-title";
  title.textContent = n.title;
  li.append(title);
  if (n.body) {
    const p = document.createElement("p");
    p.className = "notice-body";
    p.textContent = n.body;
    li.append(p);
  }
  const time = document.createElement("time");
  time.dateTime = n.created_at;
  time.textContent = new Date(n.created_at).toLocaleString(document.documentElement.lang);
  li.append(time);
  return li;
}

function addNotice(n) {
  const list = document.getElementById("notices");
  if (!list || list.querySelector(`[data-id="${n.id}"]`)) return;
  document.getElementById("notices-empty")?.remove();
  list.prepend(renderNotice(n));
}

onEvent("notice.posted", (frame) => addNotice(frame.data));
onEvent("snapshot:org", (frame) => {
  for (const n of [...frame.data.notices].reverse()) addNotice(n);
});

// --- Safety checks waiting for the person's answer ---------------------------------------------------
// A banner on every signed-in page while an open safety check has no answer from this person, and the list on
// the home page. Loaded at page start from the REST API, and again when the organisation stream says an
// incident changed (after a random 0–3 s, so thousands of phones do not ask in the same instant) or the person's
// own stream says they answered. The texts are here because this script runs on every page; the answer page
// itself gets its texts from the server.
const SAFETY_TEXTS = {
  ja: { check: "安否確認：%s", answer_now: "今すぐ回答", change: "回答を変更", drill: "訓練", none: "未回答",
    answered: "回答済み", waiting: "回答を待っている安否確認", instruction: "新しい対策指示：%s", open: "確認する",
    dismiss: "この対策指示の通知を閉じる" },
  en: { check: "Safety check: %s", answer_now: "Answer now", change: "Change answer", drill: "DRILL", none: "No answer yet",
    answered: "Answered", waiting: "Safety checks waiting for your answer", instruction: "New instruction: %s", open: "Read",
    dismiss: "Dismiss this instruction notice" },
};
const ST = SAFETY_TEXTS[document.documentElement.lang] || SAFETY_TEXTS.ja;
const SAFETY_ICONS = { safe: "✓", minor: "▲", serious: "✚", answered: "✓" };
let safetyLoads = 0;
let safetyStyle = null;

function safetyStylesheet() {
  // The banner's styles live with the answer page's (answer.css); load them once, before the banner shows.
  if (!safetyStyle) {
    const href = new URL("./answer.css", import.meta.url).href;
    if ([...document.styleSheets].some((s) => s.href === href)) safetyStyle = Promise.resolve();
    else {
      const link = Object.assign(document.createElement("link"), { rel: "stylesheet", href });
      safetyStyle = new Promise((resolve) => { link.onload = link.onerror = resolve; });
      document.head.append(link);
    }
  }
  return safetyStyle;
}

function safetyAnswerText(request) {
  const answer = request.answer;
  if (!answer) return null;
  const choice = request.questions.find((q) => q.key === "safety")?.choices.find((c) => c.key === answer.values.safety);
  const time = new Date(answer.created_at).toLocaleTimeString(document.documentElement.lang, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  return `${choice ? choice.label : ST.answered} ${time}`;
}

function safetyNode(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function safetyTitle(request) {
  return `${request.incident.is_drill ? `[${ST.drill}] ` : ""}${request.incident.title}`;
}

// --- New instructions (対策指示) in the same banner ------------------------------------------------------
// When the organisation stream says an instruction was posted to an incident this person was asked to answer (one
// of their open requests, which this script loads anyway), their request for it is fetched after a random 0–2 s.
// Everyone else asks nothing: on the worst day the whole organisation's apps are open, and most were not asked.
// An instruction that comes while the list is being (re)loaded waits for it: a send that asks the person, and the
// instruction right after it. The latest instruction per incident stays in the banner, across the pages of this
// tab, until the person opens the answer page (which lists them all), puts it away, or the incident closes.
const NOTES_KEY = `tsunagu.instructions.${org}`;
function answerPageIncident() { return Number(document.getElementById("answer")?.dataset.incident || 0); }
function boardIncident() { return Number(document.getElementById("board")?.dataset.incident || 0); }

function readNotes() {
  try { return JSON.parse(sessionStorage.getItem(NOTES_KEY) || "{}") || {}; } catch { return {}; }
}
function writeNotes(notes) {
  try {
    if (Object.keys(notes).length) sessionStorage.setItem(NOTES_KEY, JSON.stringify(notes));
    else sessionStorage.removeItem(NOTES_KEY);
  } catch { /* private mode: the note lasts as long as this page */ }
}
function dropNote(incidentId) {
  const notes = readNotes();
  if (!(incidentId in notes)) return;
  delete notes[incidentId];
  writeNotes(notes);
}

async function loadInstruction(incidentId, instructionId) {
  let request;
  try { request = await api(`safety/mine/${incidentId}/`); } catch { return; }  // 404: this person was not asked
  const list = Array.isArray(request?.instructions) ? request.instructions : [];
  if (!request.incident?.is_open || !list.length) return;
  const instruction = list.find((i) => i.id === instructionId) || list[0];
  const notes = readNotes();
  if (notes[incidentId] && notes[incidentId].id >= instruction.id) return;
  notes[incidentId] = {
    id: instruction.id,
    incident: incidentId,
    line: String(instruction.body || "").split("\n").find((l) => l.trim())?.trim().slice(0, 140) || "",
    drill: Boolean(request.incident.is_drill),
    url: `/${org}/safety/${incidentId}/`,
  };
  writeNotes(notes);
  await safetyStylesheet();
  renderSafetyBanner();
}

function instructionItem(note) {
  const link = safetyNode("a");
  link.href = note.url;
  link.dataset.instructionIncident = note.incident;
  const icon = safetyNode("span", "safety-banner-icon", "!");
  icon.setAttribute("aria-hidden", "true");
  const text = `${note.drill ? `[${ST.drill}] ` : ""}${ST.instruction.replace("%s", () => note.line)}`;
  const go = safetyNode("span", "safety-banner-go");
  go.append(safetyNode("span", "safety-banner-go-word", ST.open), " ›");
  link.append(icon, safetyNode("span", "safety-banner-text", text), go);
  const close = safetyNode("button", "safety-banner-close", "×");
  close.type = "button";
  close.setAttribute("aria-label", ST.dismiss);
  close.addEventListener("click", () => { dropNote(note.incident); renderSafetyBanner(); });
  const item = safetyNode("li", "is-instruction");
  item.dataset.note = note.id;
  item.append(link, close);
  return item;
}

let safetyRequests = [];
let safetyListed = null;  // ids of the incidents of the person's open requests, once loaded (a Set)
let safetyPending = 0;    // loads of the list scheduled or under way
const instructionsWaiting = new Map();  // incident id -> newest instruction id, until the list says whose it is

// Fetch the instructions of the person's own incidents; forget the others once no load of the list is pending.
function settleInstructions() {
  if (!safetyListed) return;  // never loaded (offline): the next load decides
  for (const [incidentId, instructionId] of instructionsWaiting) {
    if (safetyListed.has(incidentId)) {
      instructionsWaiting.delete(incidentId);
      loadInstruction(incidentId, instructionId);
    } else if (!safetyPending) instructionsWaiting.delete(incidentId);
  }
}

function renderSafetyBanner(requests = safetyRequests) {
  safetyRequests = requests;
  let banner = document.getElementById("safety-banner");
  // Not on the page that answers it, nor on the list of them; an instruction not on its own answer page or board.
  const here = answerPageIncident();
  const waiting = document.getElementById("my-requests") ? [] : requests.filter((r) => !r.answer && r.incident.id !== here);
  const notes = Object.values(readNotes())
    .filter((n) => n.incident !== here && n.incident !== boardIncident())
    .sort((a, b) => b.id - a.id);
  if (!waiting.length && !notes.length) { if (banner) banner.hidden = true; return; }
  if (!banner) {
    banner = safetyNode("div", "safety-banner");
    banner.id = "safety-banner";
    banner.setAttribute("role", "region");
    banner.setAttribute("aria-label", ST.waiting);
    banner.setAttribute("aria-live", "polite");
    document.querySelector("main")?.before(banner);
  }
  const list = safetyNode("ul");
  for (const request of waiting.slice(0, 3)) {
    const link = safetyNode("a");
    link.href = request.url;
    link.dataset.incident = request.incident.id;
    const icon = safetyNode("span", "safety-banner-icon", "!");
    icon.setAttribute("aria-hidden", "true");
    link.append(icon, safetyNode("span", "safety-banner-text", ST.check.replace("%s", () => safetyTitle(request))),
      safetyNode("span", "safety-banner-go", `${ST.answer_now} ›`));
    const item = safetyNode("li");
    item.append(link);
    list.append(item);
  }
  for (const note of notes.slice(0, 3)) list.append(instructionItem(note));
  banner.replaceChildren(list);
  banner.hidden = false;
}

function renderHomeRequests(requests) {
  const section = document.getElementById("safety-requests");
  if (!section) return;
  const list = document.getElementById("safety-request-list");
  list.replaceChildren(...requests.map((request) => {
    const item = safetyNode("li");
    item.dataset.incident = request.incident.id;
    const state = safetyNode("span", "home-request-state");
    const status = request.answer ? (SAFETY_ICONS[request.answer.status] ? request.answer.status : "answered") : "none";
    const icon = safetyNode("span", `answer-status-icon answer-status-${status}`, SAFETY_ICONS[status] || "?");
    icon.setAttribute("aria-hidden", "true");
    state.append(icon, safetyNode("span", "", safetyAnswerText(request) || ST.none));
    const go = safetyNode("a", request.answer ? "button" : "button primary", request.answer ? ST.change : ST.answer_now);
    go.href = request.url;
    item.append(safetyNode("span", "home-request-title", safetyTitle(request)), state, go);
    return item;
  }));
  section.hidden = requests.length === 0;
}

async function loadSafetyRequests() {
  const load = ++safetyLoads;
  let requests;
  try { requests = await api("safety/mine/"); } catch { return; }
  if (load !== safetyLoads || !Array.isArray(requests)) return;  // a later load has answered already
  safetyListed = new Set(requests.map((r) => Number(r.incident.id)));
  // Instructions of incidents that are no longer open (or no longer this person's) are put away.
  const notes = readNotes();
  const open = new Set(requests.map((r) => String(r.incident.id)));
  for (const key of Object.keys(notes)) if (!open.has(key)) delete notes[key];
  writeNotes(notes);
  if (requests.length) await safetyStylesheet();
  renderSafetyBanner(requests);
  renderHomeRequests(requests);
}

function loadSafetyRequestsSoon(spread) {
  safetyPending += 1;
  setTimeout(async () => {
    try { await loadSafetyRequests(); } finally {
      safetyPending -= 1;
      settleInstructions();
    }
  }, spread ? Math.random() * 3000 : 0);
}

if (body.dataset.streams) {
  onEvent("safety.incident", () => loadSafetyRequestsSoon(true));
  onEvent("safety.answered", (frame) => {
    document.querySelectorAll(`#safety-banner a[data-incident="${Number(frame.data?.incident_id)}"]`).forEach((a) => a.closest("li").remove());
    const banner = document.getElementById("safety-banner");
    if (banner && !banner.querySelector("li")) banner.hidden = true;
    loadSafetyRequestsSoon(false);
  });
  onEvent("safety.instruction", (frame) => {
    const incidentId = Number(frame.data?.incident_id);
    const instructionId = Number(frame.data?.id);
    // The answer page and the board of this incident show the instruction themselves.
    if (!incidentId || incidentId === answerPageIncident() || incidentId === boardIncident()) return;
    setTimeout(() => {
      instructionsWaiting.set(incidentId, Math.max(instructionId || 0, instructionsWaiting.get(incidentId) || 0));
      settleInstructions();
    }, Math.random() * 2000);
  });
  // Opening the answer page shows every instruction: the note has done its work.
  if (answerPageIncident()) dropNote(answerPageIncident());
  // A snapshot after the first means the page missed events while away: ask again.
  let snapshots = 0;
  onEvent("snapshot:org", () => { if (snapshots++ > 0) loadSafetyRequestsSoon(true); });
  loadSafetyRequestsSoon(false);
}

// --- Service worker and push -------------------------------------------------------------------------
// A subscription is made with the server's VAPID public key (applicationServerKey). After a key rotation
// (`manage.py vapid_rotate`) every signed-in page renews this browser's subscription once: unsubscribe, subscribe
// with the new key, POST the new one, DELETE the old endpoint. Silent unless it fails. The texts are here because
// this runs on every page.
const PUSH_TEXTS = {
  ja: { renew_failed: "この端末の通知を更新できませんでした。プロフィールで通知をオンにし直してください。", open: "プロフィールを開く" },
  en: { renew_failed: "Notifications on this device could not be renewed. Turn them on again on your profile.", open: "Open profile" },
};
const PT = PUSH_TEXTS[document.documentElement.lang] || PUSH_TEXTS.ja;
// An endpoint whose POST has not gone through yet: sent again on the next page.
const PUSH_UNSENT = "tsunagu.push.unsent";

function b64ToBytes(b64) {
  const s = atob(b64.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

function bytesToB64(buffer) {
  let s = "";
  for (const byte of new Uint8Array(buffer)) s += String.fromCharCode(byte);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function normalKey(key) { return String(key || "").replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, ""); }

// The key a subscription was made with ("" where the browser does not say).
function subscriptionKey(subscription) {
  const key = subscription?.options?.applicationServerKey;
  return key ? bytesToB64(key) : "";
}

function remember(name, value) {
  try { if (value) localStorage.setItem(name, value); else localStorage.removeItem(name); } catch { /* private mode */ }
}
function recalled(name) { try { return localStorage.getItem(name); } catch { return null; } }

async function postSubscription(subscription, key) {
  const json = subscription.toJSON();
  remember(PUSH_UNSENT, json.endpoint);
  await api("push/subscriptions/", {
    method: "POST",
    data: { endpoint: json.endpoint, keys: json.keys, vapid_public_key: subscriptionKey(subscription) || normalKey(key) },
  });
  remember(PUSH_UNSENT, null);
}

async function forgetEndpoint(endpoint) {
  try {
    await api("push/subscriptions/", { method: "DELETE", data: { endpoint } });
  } catch (err) {
    if (err.status !== 404) throw err;  // 404: the server had already forgotten it
  }
}

async function currentVapidKey() {
  const section = document.getElementById("push");
  if (section?.dataset.vapidKey) return section.dataset.vapidKey;
  return (await api("push/key/")).public_key;
}

// Subscribe with `key`, replacing a subscription made with another key (a browser keeps one per service worker,
// and refuses a second key while the first is subscribed). Returns true when the subscription changed.
async function subscribeWith(registration, key, old) {
  let unsubscribed = false;
  let fresh = null;
  try {
    if (old && normalKey(subscriptionKey(old)) !== normalKey(key)) unsubscribed = await old.unsubscribe();
    fresh = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64ToBytes(key) });
    await postSubscription(fresh, key);
  } finally {
    // The old subscription is dead once unsubscribed, whatever happened after.
    if (old && unsubscribed && old.endpoint !== fresh?.endpoint) await forgetEndpoint(old.endpoint).catch(() => {});
  }
  return !old || old.endpoint !== fresh.endpoint || unsubscribed;
}

export async function enablePush(key) {
  const status = document.getElementById("push-status");
  try {
    if (!("serviceWorker" in navigator) || !("PushManager" in window)) throw new Error("unsupported");
    const permission = await Notification.requestPermission();
    if (permission !== "granted") throw new Error("denied");
    const registration = await navigator.serviceWorker.ready;
    await subscribeWith(registration, key, await registration.pushManager.getSubscription());
    if (status) status.textContent = status.dataset.on || "✓";
    location.reload();
  } catch (err) {
    if (status) status.textContent = `${status.dataset.failed || "✗"} (${err.message})`;
  }
}

function showPushProblem() {
  const status = document.getElementById("push-status");
  if (status) { status.textContent = PT.renew_failed; return; }
  if (document.getElementById("push-problem")) return;
  const note = safetyNode("p", "msg msg-warning", `${PT.renew_failed} `);
  note.id = "push-problem";
  note.setAttribute("role", "status");
  const link = safetyNode("a", "", PT.open);
  link.href = `/${org}/profile/`;
  note.append(link);
  document.querySelector("main")?.prepend(note);
}

// On every signed-in page: a subscription made with an earlier VAPID key is renewed with the current one, and a
// subscription whose POST failed last time is sent again. Returns true when the subscription changed.
async function renewPushSubscription() {
  if (!body.dataset.streams || !("serviceWorker" in navigator) || !("PushManager" in window)) return false;
  if (!("Notification" in window) || Notification.permission !== "granted") return false;
  const registration = await navigator.serviceWorker.getRegistration("/");
  if (!registration) return false;
  const renew = async () => {
    const old = await registration.pushManager.getSubscription();
    if (!old) return false;
    const key = await currentVapidKey();
    const made = subscriptionKey(old);
    if (!made || normalKey(made) === normalKey(key)) {
      if (recalled(PUSH_UNSENT) === old.endpoint) await postSubscription(old, key);
      return false;
    }
    return subscribeWith(registration, key, old);
  };
  try {
    // One tab at a time: the others then find the subscription renewed already.
    return navigator.locks ? await navigator.locks.request("tsunagu-push-renew", renew) : await renew();
  } catch (err) {
    console.warn("push subscription renewal:", err);
    showPushProblem();
    return false;
  }
}

async function endpointHash(endpoint) {
  if (!crypto.subtle) return "";  // not a secure context
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(endpoint));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("").slice(0, 32);
}

// The profile's devices list: mark this browser's own subscription, and remove devices.
async function markThisDevice() {
  if (!("serviceWorker" in navigator)) return null;
  const registration = await navigator.serviceWorker.getRegistration("/");
  const subscription = await registration?.pushManager?.getSubscription();
  if (!subscription) return null;
  const hash = await endpointHash(subscription.endpoint);
  const row = hash && document.querySelector(`#devices li[data-endpoint-hash="${hash}"]`);
  if (row) {
    row.querySelector(".device-this").hidden = false;
    row.dataset.this = "1";
  }
  return subscription;
}

function setUpProfile(renewed) {
  const section = document.getElementById("push");
  if (!section) return;
  document.getElementById("push-enable")?.addEventListener("click", () => enablePush(section.dataset.vapidKey));
  const list = document.getElementById("devices");
  // The list was drawn before the renewal: draw it again, with the renewed device.
  renewed.then((changed) => (changed ? location.reload() : markThisDevice())).catch(() => {});
  list?.addEventListener("click", async (e) => {
    const button = e.target.closest("[data-remove]");
    if (!button) return;
    const row = button.closest("li");
    button.disabled = true;
    try {
      await api("push/subscriptions/", { method: "DELETE", data: { id: Number(button.dataset.remove) } });
    } catch (err) {
      if (err.status !== 404) {  // 404: gone already
        button.disabled = false;
        document.getElementById("push-status").textContent = list.dataset.removeFailed || err.message;
        return;
      }
    }
    if (row.dataset.this) {
      // This browser's own: stop it at the push service too, so nothing arrives here any more.
      const registration = await navigator.serviceWorker.getRegistration("/");
      await (await registration?.pushManager?.getSubscription())?.unsubscribe().catch(() => {});
    }
    row.remove();
    if (!list.querySelector("li")) list.append(safetyNode("li", "empty", list.dataset.empty || ""));
  });
}

if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch((err) => console.warn("service worker:", err));
}

if (body.dataset.streams) {
  const live = new Live(JSON.parse(body.dataset.streams));
  window.tsunagu = { live, onEvent, api };
  live.connect();
}
setUpProfile(renewPushSubscription());

// Signing out forgets the pages kept for offline use (and so does reaching a sign-in page, for sessions
// that simply expired): a shared phone must not show the last person's pages.
document.querySelectorAll('form[action$="/logout/"]').forEach((form) => {
  form.addEventListener("submit", async (event) => {
    try { sessionStorage.removeItem(NOTES_KEY); } catch { /* nothing kept */ }
    if (!("caches" in window) || form.dataset.cleared) return;
    event.preventDefault();
    await caches.delete("pages-v1").catch(() => {});
    form.dataset.cleared = "1";
    form.submit();
  });
});
if (document.getElementById("login_id")) {
  if ("caches" in window) caches.delete("pages-v1").catch(() => {});
  try { sessionStorage.removeItem(NOTES_KEY); } catch { /* nothing kept */ }
}
