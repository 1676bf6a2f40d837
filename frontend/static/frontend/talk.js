// Talk: the room list with live unread counts, and the open room (history by pages, sending with retry,
// read receipts, typing, edit and delete, files, members). Everything the page shows first comes with the
// page (#talk-data) together with each room stream's sequence number, so the live connection (app.js `Live`)
// resumes from there: an event replayed over what the page already shows is dropped by message id.
// Writes go to the talk REST API; what happened arrives back as events. Texts come translated (#talk-texts).
import { api, onEvent } from "./app.js";

const org = document.body.dataset.org;
const data = readJson("talk-data");
const T = readJson("talk-texts");
const live = window.tsunagu?.live;
const me = data.me || {};
const lang = document.documentElement.lang || "ja";
const R = data.room;                    // the open room (detail), or null
const roomStream = (id) => `room.${id}`;

function readJson(id) {
  const node = document.getElementById(id);
  try { return node ? JSON.parse(node.textContent) : {}; } catch { return {}; }
}

// "%(n)s online" with {n: 3} → "3 online"
function fmt(template, values = {}) {
  return String(template ?? "").replace(/%\((\w+)\)[sd]/g, (_, key) => String(values[key] ?? ""));
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

function csrfToken() {
  const m = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

function errorText(err) {
  if (!err || !err.status) return T.network;
  return err.body?.message || err.message || T.network;
}

function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function size(n) {
  if (n < 1024) return fmt(T.bytes, { n });
  if (n < 1024 * 1024) return fmt(T.kb, { n: (n / 1024).toFixed(n < 10240 ? 1 : 0) });
  return fmt(T.mb, { n: (n / 1048576).toFixed(1) });
}

function when(iso, { long = false } = {}) {
  const d = new Date(iso);
  const now = new Date();
  const time = d.toLocaleTimeString(lang, { hour: "numeric", minute: "2-digit" });
  if (d.toDateString() === now.toDateString()) return time;
  const options = { month: "numeric", day: "numeric" };
  if (d.getFullYear() !== now.getFullYear()) options.year = "numeric";
  const date = d.toLocaleDateString(lang, options);
  return long ? `${date} ${time}` : date;
}

// Plain text with http(s) addresses as links. Never HTML: every piece is a text node or an <a> we build.
const URL_RE = /\bhttps?:\/\/[^\s<>"'、。，．「」『』（）【】]+/gi;
function linkified(text) {
  const frag = document.createDocumentFragment();
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    let url = match[0];
    const trail = url.match(/[.,;:!?)\]}]+$/);
    if (trail) url = url.slice(0, -trail[0].length);
    let href = null;
    try {
      const parsed = new URL(url);
      if (parsed.protocol === "http:" || parsed.protocol === "https:") href = parsed.href;
    } catch { /* not an address after all */ }
    frag.append(text.slice(last, match.index));
    frag.append(href ? el("a", { href, target: "_blank", rel: "noopener noreferrer" }, url) : url);
    last = match.index + url.length;
  }
  frag.append(text.slice(last));
  return frag;
}

const announcer = document.getElementById("talk-announce");
function announce(text) {
  if (!announcer) return;
  announcer.textContent = "";
  setTimeout(() => { announcer.textContent = text; }, 50);
}

// --- Presence ------------------------------------------------------------------------------------------
let presence = {};                       // person id (string) -> online
const presenceListeners = [];
function online(id) { return presence[String(id)] === true; }
function presenceWord(id) {
  return el("span", { class: online(id) ? "presence-on" : "presence-off" }, online(id) ? T.online : T.offline);
}

let presenceSoon = null;
function presenceAgain() {               // a person just came into view: ask soon, once
  clearTimeout(presenceSoon);
  presenceSoon = setTimeout(pollPresence, 300);
}

async function pollPresence() {
  const ids = new Set();
  for (const r of rooms.values()) if (r.summary?.kind === "direct" && r.summary.other) ids.add(r.summary.other.id);
  if (R) for (const m of R.members || []) ids.add(m.id);
  if (!ids.size) return;
  try {
    presence = await api(`talk/presence/?ids=${[...ids].slice(0, 500).join(",")}`);
  } catch { return; }
  for (const fn of presenceListeners) fn();
}

// --- The room list -------------------------------------------------------------------------------------
const listEl = document.getElementById("rooms");
const listEmpty = document.getElementById("rooms-empty");
const rooms = new Map();                 // room id -> {summary, lastId, li, loading: null | queued frames}

// Icons are inline SVG: emoji fonts are missing on many office PCs and servers, and show as empty boxes.
const SVG_NS = "http://www.w3.org/2000/svg";
const ICON_PATHS = {
  clip: "M16.5 6.5v10a4.5 4.5 0 0 1-9 0V5a3 3 0 0 1 6 0v10.5a1.5 1.5 0 0 1-3 0V6.5",
  download: "M12 4v11m-5-5 5 5 5-5M5 20h14",
};
function icon(name) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute("d", ICON_PATHS[name]);
  svg.append(path);
  return svg;
}

// A room's picture: the first letter of its name; people are round, groups and departments square.
function avatar(s) {
  return el("span", { class: `room-icon room-icon-${s.kind}`, "aria-hidden": "true" }, Array.from((s.name || "?").trim())[0] || "?");
}

function previewText(s) {
  const m = s.last_message;
  if (!m) return "";
  if (m.deleted) return T.deleted;
  let text = m.body ? m.body.trim().split("\n", 1)[0] : (m.attachment ? `${T.attachment}: ${m.attachment.name}` : "");
  if (m.sender && m.sender.id === me.id) text = fmt(T.you_said, { text });
  else if (s.kind !== "direct" && m.sender) text = `${m.sender.name}: ${text}`;
  return text;
}

function renderRoom(r) {
  const s = r.summary;
  const current = R && R.id === s.id;
  const unread = current ? 0 : s.unread;
  const picture = avatar(s);
  const isOnline = s.kind === "direct" && s.other && online(s.other.id);
  if (isOnline) picture.append(el("span", { class: "dot" }));
  const m = s.last_message;
  const top = el("span", { class: "room-top" },
    el("span", { class: "room-name" }, s.name || "—", isOnline ? el("span", { class: "sr-only" }, ` (${T.online})`) : null),
    m ? el("time", { class: "room-time", datetime: m.created_at }, when(m.created_at)) : null);
  const bottom = el("span", { class: "room-bottom" }, el("span", { class: "room-preview" }, previewText(s)));
  if (unread > 0) {
    bottom.append(el("span", { class: "unread", "data-unread": String(unread) },
      unread > 999 ? "999+" : String(unread), el("span", { class: "sr-only" }, ` ${T.unread}`)));
  }
  const link = el("a", { class: "room-link", href: s.url, "aria-current": current ? "page" : null },
    picture, el("span", { class: "room-main" }, top, bottom));
  const hadFocus = r.li && r.li.contains(document.activeElement);
  r.li ||= el("li", {});
  r.li.className = `room-item${unread > 0 ? " room-has-unread" : ""}`;
  r.li.dataset.room = s.id;
  r.li.replaceChildren(link);
  if (hadFocus) link.focus();
}

function placeRooms() {
  if (!listEl) return;
  const sorted = [...rooms.values()].filter((r) => r.summary)
    .sort((a, b) => (b.lastId - a.lastId) || (b.summary.id - a.summary.id));
  sorted.forEach((r, i) => {
    if (listEl.children[i] !== r.li) {
      const hadFocus = r.li.contains(document.activeElement);
      listEl.insertBefore(r.li, listEl.children[i] || null);
      if (hadFocus) r.li.querySelector("a")?.focus();
    }
  });
  if (listEmpty) listEmpty.hidden = sorted.length > 0;
}

function setSummary(summary) {
  let r = rooms.get(summary.id);
  if (!r) { r = { summary: null, lastId: 0, li: null, loading: null }; rooms.set(summary.id, r); }
  r.summary = summary;
  r.lastId = summary.last_message?.id || 0;
  renderRoom(r);
  return r;
}

function removeRoom(id) {
  const r = rooms.get(id);
  rooms.delete(id);
  r?.li?.remove();
  live?.unfollow(roomStream(id));
  placeRooms();
  if (R && R.id === id) roomGone();
}

// The summary from the server, after a snapshot (events were missed) or for a room just added. Events that
// arrive meanwhile wait and are applied on top, so nothing is counted twice or lost.
async function loadSummary(id) {
  let r = rooms.get(id);
  if (r?.loading) { r.again = true; return; }
  if (!r) { r = { summary: null, lastId: 0, li: null, loading: null }; rooms.set(id, r); }
  r.loading = [];
  try {
    const detail = await api(`talk/rooms/${id}/`);
    const queued = r.loading;
    r.loading = null;
    setSummary(detail);
    placeRooms();
    for (const frame of queued) listApply(frame);
    if (detail.other && !(String(detail.other.id) in presence)) presenceAgain();
  } catch (err) {
    r.loading = null;
    if (err.status === 404 || err.status === 403) removeRoom(id);
    return;
  }
  if (r.again) { r.again = false; loadSummary(id); }
}

function listApply(frame) {
  const d = frame.data || {};
  const id = Number(String(frame.stream).split(".")[1]);
  const r = rooms.get(id);
  if (!r) return;
  if (r.loading) { r.loading.push(frame); return; }
  if (!r.summary) return;
  const s = r.summary;
  const isOpen = R && R.id === id;
  if (frame.event === "message.posted") {
    if (d.id <= r.lastId) return;               // already in the summary (a replay)
    r.lastId = d.id;
    s.last_message = d;
    const mine = d.sender && d.sender.id === me.id;
    if (mine) s.last_read_id = Math.max(s.last_read_id, d.id);
    else if (!d.deleted && d.id > s.last_read_id) {
      s.unread += 1;
      if (!isOpen) announce(fmt(T.new_in_room, { room: s.name }));
    }
  } else if (frame.event === "message.edited" || frame.event === "message.deleted") {
    if (s.last_message && s.last_message.id === d.id) s.last_message = d;
    if (frame.event === "message.deleted" && d.id > s.last_read_id && d.sender?.id !== me.id && s.unread > 0) {
      loadSummary(id);                           // was it counted? the server knows
      return;
    }
  } else if (frame.event === "room.updated") {
    if ((s.kind === "group" || s.kind === "instruction") && d.name) s.name = d.name;
    if (typeof d.members_count === "number") s.members_count = d.members_count;
    if ((d.removed || []).includes(me.id)) { removeRoom(id); return; }
  } else if (frame.event === "room.read") {
    if (d.user !== me.id) return;
    s.last_read_id = Math.max(s.last_read_id, d.last_read_id);
    if (s.last_read_id >= r.lastId) s.unread = 0;
    else { loadSummary(id); return; }
  }
  renderRoom(r);
  placeRooms();
}

// Rooms added while this page was being rendered: the person's own stream only starts with its snapshot.
async function refreshRoomList() {
  let list;
  try { list = await api("talk/rooms/"); } catch { return; }
  for (const summary of list) {
    if (rooms.has(summary.id)) continue;
    setSummary(summary);
    live?.follow(roomStream(summary.id), null);
  }
  placeRooms();
}

function markRoomRead(id, position) {
  const r = rooms.get(id);
  if (!r?.summary) return;
  r.summary.last_read_id = Math.max(r.summary.last_read_id, position);
  if (r.summary.last_read_id >= r.lastId) r.summary.unread = 0;
  renderRoom(r);
}

// --- The open room -------------------------------------------------------------------------------------
const scroller = document.getElementById("scroller");
const msgList = document.getElementById("talk-messages");
const historyEl = document.getElementById("history");
const noMessages = document.getElementById("no-messages");
const typingEl = document.getElementById("typing");
const newBelow = document.getElementById("new-below");
const metaEl = document.getElementById("room-meta");
const input = document.getElementById("message-input");
const composer = document.getElementById("composer");
const composerError = document.getElementById("composer-error");
const fileInput = document.getElementById("file-input");
const fileChosen = document.getElementById("file-chosen");

const msgs = new Map();                 // message id -> {m, li}
const pending = new Map();              // client_id -> {clientId, body, file, li}
let read = {};                          // member id (string) -> last read message id
let hasMore = false;
let loadingOlder = false;
let stuck = true;                       // the view is at the newest message
let readSent = 0;
let chosenFile = null;
const typers = new Map();               // person id -> {name, timer}

function atBottom() { return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 48; }
function scrollToBottom() { scroller.scrollTop = scroller.scrollHeight; stuck = true; if (newBelow) newBelow.hidden = true; }
function newestId() { let max = 0; for (const id of msgs.keys()) if (id > max) max = id; return max; }
function oldestId() { let min = Infinity; for (const id of msgs.keys()) if (id < min) min = id; return min === Infinity ? 0 : min; }

function renderMeta() {
  if (!metaEl || !R) return;
  if (R.kind === "direct") {
    metaEl.replaceChildren(R.other ? presenceWord(R.other.id) : "");
    return;
  }
  const count = (R.members || []).filter((m) => online(m.id)).length;
  metaEl.replaceChildren(fmt(T.members, { n: R.members_count }), " · ",
    el("span", { class: count ? "presence-on" : "presence-off" }, fmt(T.n_online, { n: count })));
}

function receiptText(m) {
  if (m.deleted) return "";
  let readers = 0;
  for (const [uid, position] of Object.entries(read)) if (Number(uid) !== me.id && position >= m.id) readers += 1;
  if (!readers) return "";
  return R.kind === "direct" ? T.read : fmt(T.read_by, { n: readers });
}

function updateReceipts() {
  for (const { m, li } of msgs.values()) {
    if (m.sender?.id !== me.id) continue;
    const slot = li.querySelector(".tmsg-receipt");
    const text = receiptText(m);
    if (slot) { slot.textContent = text; slot.hidden = !text; }
  }
}

const blobUrls = new Map();              // attachment id -> Promise of an object URL
function imageUrl(a) {
  if (!blobUrls.has(a.id)) {
    // Files are served as downloads (Content-Disposition: attachment), so an <img src> cannot show them.
    blobUrls.set(a.id, fetch(a.url, { credentials: "same-origin" })
      .then((r) => { if (!r.ok) throw new Error(String(r.status)); return r.blob(); })
      .then((b) => URL.createObjectURL(b)));
  }
  return blobUrls.get(a.id);
}

function attachmentEl(a) {
  const wrap = el("div", { class: "tmsg-attachment" });
  if (a.is_image && a.url) {
    const img = el("img", { class: "tmsg-image", alt: a.name });
    img.addEventListener("load", () => { if (stuck) scrollToBottom(); });
    imageUrl(a).then((url) => { img.src = url; })
      .catch(() => { blobUrls.delete(a.id); img.replaceWith(el("span", { class: "hint" }, T.image_failed)); });
    wrap.append(img);
  }
  const label = [icon("clip"), el("span", {}, a.name), el("span", { class: "tmsg-file-size" }, size(a.size))];
  wrap.append(a.url ? el("a", { class: "tmsg-file", href: a.url, download: a.name }, ...label) : el("span", { class: "tmsg-file" }, ...label));
  return wrap;
}

function renderMessage(m) {
  const mine = m.sender?.id === me.id;
  const classes = ["tmsg"];
  if (mine) classes.push("tmsg-mine");
  if (m.deleted) classes.push("tmsg-deleted");
  const li = el("li", { class: classes.join(" "), "data-id": String(m.id) });
  const showSender = !mine && R.kind !== "direct";
  const meta = el("div", { class: "tmsg-meta" },
    el("span", { class: showSender ? "tmsg-sender" : "sr-only" }, mine ? T.me : (m.sender?.name || "—")),
    el("time", { datetime: m.created_at, title: new Date(m.created_at).toLocaleString(lang) }, when(m.created_at, { long: true })),
    m.edited_at && !m.deleted ? el("span", { class: "tmsg-edited" }, `(${T.edited})`) : null);
  const bubble = el("div", { class: "tmsg-bubble" });
  if (m.deleted) bubble.append(T.deleted);
  else {
    if (m.body) bubble.append(el("p", { class: "tmsg-body" }, linkified(m.body)));
    if (m.attachment) bubble.append(attachmentEl(m.attachment));
  }
  const row = el("div", { class: "tmsg-row" }, bubble);
  li.append(meta, row);
  if (mine && !m.deleted) {
    row.append(el("button", { type: "button", class: "tmsg-menu-btn", "aria-label": T.actions, "aria-expanded": "false", "data-act": "menu" }, "⋯"));
    const menu = el("div", { class: "tmsg-menu", hidden: true },
      el("button", { type: "button", "data-act": "edit" }, `✎ ${T.edit}`),
      el("button", { type: "button", class: "danger", "data-act": "delete" }, `✕ ${T.delete}`));
    li.append(menu);
  }
  if (mine) {
    const text = receiptText(m);
    li.append(el("div", { class: "tmsg-foot" }, el("span", { class: "tmsg-receipt", hidden: !text }, text)));
  }
  return li;
}

// Where a message with this id goes: after the last shown message with a smaller id, before pending ones.
function insertInOrder(li, id) {
  let after = msgList.lastElementChild;
  while (after && (after.dataset.pending || Number(after.dataset.id) > id)) after = after.previousElementSibling;
  msgList.insertBefore(li, after ? after.nextElementSibling : msgList.firstElementChild);
}

function version(m) { return m.deleted ? Infinity : (m.edited_at ? Date.parse(m.edited_at) : 0); }

// Show a message from the page, a page of history, the stream or our own POST; each id once, newest version.
function upsert(m, { isNew = false } = {}) {
  if (m.client_id && m.sender?.id === me.id && pending.has(m.client_id)) {
    pending.get(m.client_id).li.remove();
    pending.delete(m.client_id);
  }
  const known = msgs.get(m.id);
  if (known) {
    if (version(m) < version(known.m)) return;
    const li = renderMessage(m);
    known.li.replaceWith(li);
    known.m = m;
    known.li = li;
    return;
  }
  if (!isNew) return;                    // an edit of a message not loaded yet: it comes with its page
  const wasAtBottom = atBottom();
  const li = renderMessage(m);
  msgs.set(m.id, { m, li });
  insertInOrder(li, m.id);
  noMessages.hidden = true;
  return wasAtBottom;
}

function addLive(m) {
  const mine = m.sender?.id === me.id;
  const wasAtBottom = upsert(m, { isNew: true });
  if (wasAtBottom === undefined) return;    // known already
  msgs.get(m.id).li.classList.add("tmsg-new");
  if (mine || wasAtBottom) scrollToBottom();
  else if (newBelow) newBelow.hidden = false;
  if (!mine && m.sender) stopTyping(m.sender.id);
  if (mine) read[String(me.id)] = Math.max(read[String(me.id)] || 0, m.id);
  maybeMarkRead();
}

async function maybeMarkRead() {
  if (!R || document.visibilityState !== "visible" || !atBottom()) return;
  const newest = newestId();
  if (!newest || newest <= readSent) return;
  const before = readSent;
  readSent = newest;
  try {
    const answer = await api(`talk/rooms/${R.id}/read/`, { method: "POST", data: { last_read_id: newest } });
    read[String(me.id)] = Math.max(read[String(me.id)] || 0, answer.last_read_id);
    markRoomRead(R.id, answer.last_read_id);
  } catch {
    readSent = before;
  }
}

async function loadOlder() {
  if (!R || loadingOlder || !hasMore) return;
  loadingOlder = true;
  historyEl.textContent = T.loading_older;
  msgList.setAttribute("aria-busy", "true");
  try {
    const page = await api(`talk/rooms/${R.id}/messages/?before=${oldestId()}`);
    const height = scroller.scrollHeight;
    const top = scroller.scrollTop;
    for (const m of page.messages) upsert(m, { isNew: true });
    // Keep what the person was reading where it was.
    scroller.scrollTop = top + (scroller.scrollHeight - height);
    hasMore = page.has_more;
    historyEl.textContent = hasMore ? "" : T.beginning;
    updateReceipts();
  } catch {
    historyEl.textContent = T.older_failed;
    hasMore = true;
  } finally {
    loadingOlder = false;
    msgList.removeAttribute("aria-busy");
  }
  // Still at the top (a short page, or a tall screen): the observer will not fire again, so go on.
  if (hasMore && scroller.scrollTop < 300 && historyEl.textContent !== T.older_failed) loadOlder();
}

function onSnapshot(snapshot) {
  // Missed too much while away: the snapshot is the newest page. If it does not reach back to what is
  // shown, start again from it (older pages load on scrolling up).
  const newest = newestId();
  const first = snapshot.messages[0];
  if (snapshot.has_more && first && first.id > newest && msgs.size) {
    for (const { li } of msgs.values()) li.remove();
    msgs.clear();
    hasMore = true;
    historyEl.textContent = "";
  }
  const wasAtBottom = atBottom();
  for (const m of snapshot.messages) upsert(m, { isNew: true });
  for (const [uid, position] of Object.entries(snapshot.read || {})) read[uid] = Math.max(read[uid] || 0, position);
  updateReceipts();
  if (wasAtBottom) scrollToBottom();
  maybeMarkRead();
}

function renderTyping() {
  if (!typingEl) return;
  const names = [...typers.values()].map((t) => t.name);
  typingEl.textContent = names.length === 0 ? "" : names.length === 1 ? fmt(T.typing_one, { name: names[0] }) : fmt(T.typing_many, { n: names.length });
}

function stopTyping(id) {
  const t = typers.get(id);
  if (!t) return;
  clearTimeout(t.timer);
  typers.delete(id);
  renderTyping();
}

function roomGone() {
  if (!R) return;
  R.gone = true;
  showError(T.removed_from_room);
  if (composer) for (const c of composer.elements) c.disabled = true;
  setTimeout(() => { location.href = `/${org}/talk/`; }, 2500);
}

async function refreshDetail() {
  try {
    const detail = await api(`talk/rooms/${R.id}/`);
    Object.assign(R, { name: detail.name, members: detail.members, members_count: detail.members_count,
      is_admin: detail.is_admin, can_manage: detail.can_manage });
    for (const [uid, position] of Object.entries(detail.read || {})) read[uid] = Math.max(read[uid] || 0, position);
    // Someone who left no longer counts as a reader.
    for (const uid of Object.keys(read)) if (!(uid in (detail.read || {}))) delete read[uid];
    document.getElementById("room-name").textContent = detail.name;
    renderMeta();
    renderMembers();
    updateReceipts();
    pollPresence();
  } catch (err) {
    if (err.status === 404) roomGone();
  }
}

// --- Sending -------------------------------------------------------------------------------------------
function showError(text) {
  if (!composerError) return;
  composerError.textContent = text;
  composerError.hidden = !text;
}

function pendingLi(p) {
  const li = el("li", { class: "tmsg tmsg-mine tmsg-pending", "data-pending": "1", "data-client-id": p.clientId });
  const bubble = el("div", { class: "tmsg-bubble" });
  if (p.body) bubble.append(el("p", { class: "tmsg-body" }, p.body));
  if (p.file) bubble.append(attachmentEl({ name: p.file.name, size: p.file.size, is_image: false }));
  li.append(el("div", { class: "tmsg-row" }, bubble), el("div", { class: "tmsg-foot" }, el("span", { class: "tmsg-status" }, T.sending)));
  return li;
}

function setPendingFailed(p) {
  p.li.classList.add("tmsg-failed");
  p.li.querySelector(".tmsg-foot").replaceChildren(
    el("span", { class: "tmsg-status tmsg-status-failed" }, T.not_sent),
    el("button", { type: "button", "data-act": "retry" }, `↻ ${T.retry}`),
    el("button", { type: "button", "data-act": "discard" }, T.discard));
}

async function post(p) {
  p.li.classList.remove("tmsg-failed");
  p.li.querySelector(".tmsg-foot").replaceChildren(el("span", { class: "tmsg-status" }, T.sending));
  const init = { method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" } };
  if (p.file) {
    const form = new FormData();
    form.append("body", p.body);
    form.append("client_id", p.clientId);
    form.append("file", p.file, p.file.name);
    init.body = form;
  } else {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify({ body: p.body, client_id: p.clientId });
  }
  try {
    const response = await fetch(`/${org}/api/talk/rooms/${R.id}/messages/`, init);
    const json = await response.json().catch(() => ({}));
    if (!response.ok) throw Object.assign(new Error(json.message || response.statusText), { status: response.status, body: json });
    addLive(json);
    showError("");
  } catch (err) {
    if (!pending.has(p.clientId)) return;   // the stream delivered it meanwhile
    showError(errorText(err));
    const retryable = !err.status || err.status >= 500 || err.status === 429;
    if (retryable) { setPendingFailed(p); return; }
    // Refused (a file the policy does not allow, too large…): give it back, so nothing typed is lost.
    p.li.remove();
    pending.delete(p.clientId);
    if (!input.value) { input.value = p.body; autoGrow(); }
  }
}

// One message at a time, in the order they were written: two quick sends must not overtake each other.
let sendQueue = Promise.resolve();
function enqueue(p) { sendQueue = sendQueue.then(() => post(p), () => post(p)); }

function submit() {
  if (!R || R.gone) return;
  const body = input.value;
  const file = chosenFile;
  if (!body.trim() && !file) return;
  input.value = "";
  autoGrow();
  clearFile();
  const p = { clientId: uuid(), body, file };
  p.li = pendingLi(p);
  pending.set(p.clientId, p);
  msgList.append(p.li);
  noMessages.hidden = true;
  scrollToBottom();
  enqueue(p);
}

function autoGrow() {
  if (!input) return;
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight + 2, Math.round(window.innerHeight * 0.4))}px`;
}

function clearFile() {
  chosenFile = null;
  if (fileInput) fileInput.value = "";
  if (fileChosen) fileChosen.hidden = true;
}

function chooseFile(file) {
  if (!file) return;
  if (file.size > data.max_file_mb * 1048576) {
    showError(fmt(T.file_too_large, { mb: data.max_file_mb }));
    clearFile();
    return;
  }
  showError("");
  chosenFile = file;
  document.getElementById("file-chosen-text").textContent = fmt(T.file_chosen, { name: file.name, size: size(file.size) });
  fileChosen.hidden = false;
}

// --- Edit and delete -----------------------------------------------------------------------------------
function closeMenus(except = null) {
  for (const menu of msgList.querySelectorAll(".tmsg-menu:not([hidden])")) {
    if (menu === except) continue;
    menu.hidden = true;
    menu.closest("li").querySelector('[data-act="menu"]')?.setAttribute("aria-expanded", "false");
  }
}

function startEdit(id) {
  const known = msgs.get(id);
  if (!known) return;
  const { m, li } = known;
  const bubble = li.querySelector(".tmsg-bubble");
  const area = el("textarea", { maxlength: "4000", "aria-label": T.edit });
  area.value = m.body;
  const error = el("p", { class: "error", role: "alert", hidden: true });
  const save = el("button", { class: "primary" }, T.save);
  const cancel = el("button", { type: "button" }, T.cancel);
  const form = el("form", { class: "tmsg-edit" }, area, error, el("div", { class: "tmsg-edit-actions" }, cancel, save));
  const restore = () => { const fresh = msgs.get(id); if (fresh) { const again = renderMessage(fresh.m); fresh.li.replaceWith(again); fresh.li = again; } };
  cancel.addEventListener("click", restore);
  area.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { e.preventDefault(); restore(); }
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229 && !coarse()) { e.preventDefault(); form.requestSubmit(); }
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    save.disabled = true;
    try {
      const updated = await api(`talk/messages/${id}/`, { method: "PATCH", data: { body: area.value } });
      upsert(updated);
      if (msgs.get(id)?.li.contains(form)) restore();
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
      save.disabled = false;
    }
  });
  li.querySelector(".tmsg-menu").hidden = true;
  bubble.replaceWith(form);
  area.focus();
}

async function deleteMessage(id) {
  if (!confirm(T.confirm_delete)) return;
  try {
    upsert(await api(`talk/messages/${id}/`, { method: "DELETE" }));
  } catch (err) {
    showError(errorText(err));
  }
}

function coarse() { return window.matchMedia("(pointer: coarse)").matches; }

// --- Members and settings (group and department rooms) -------------------------------------------------
const settingsDialog = document.getElementById("dlg-settings");
const membersEl = document.getElementById("members");

function settingsStatus(text, isError = false) {
  const status = document.getElementById("settings-status");
  const error = document.getElementById("settings-error");
  if (status) status.textContent = isError ? "" : text;
  if (error) { error.textContent = isError ? text : ""; error.hidden = !isError; }
}

function renderMembers() {
  if (!membersEl || !R) return;
  membersEl.replaceChildren(...(R.members || []).map((m) => {
    const li = el("li", { class: "member", "data-person": String(m.id) },
      el("span", { class: "member-name" }, m.name, m.id === me.id ? ` ${T.you}` : "",
        m.department ? el("small", { class: "pick-dept" }, ` ${m.department}`) : null),
      m.is_admin ? el("span", { class: "member-admin" }, T.admin) : null,
      presenceWord(m.id));
    if (R.can_manage && m.id !== me.id) {
      li.append(el("button", { type: "button", class: "danger", "data-remove": String(m.id), "data-name": m.name }, T.remove));
    }
    return li;
  }));
}

// A people search for a dialog: results as buttons (pick one) or checkboxes (pick several).
function peopleSearch({ inputEl, statusEl, resultsEl, multiple = false, chosen = null, exclude = () => false, onPick = null }) {
  let timer = null;
  let controller = null;
  async function run() {
    controller?.abort();
    controller = new AbortController();
    const q = inputEl.value.trim();
    try {
      const response = await fetch(`/${org}/api/talk/people/?q=${encodeURIComponent(q)}`, {
        credentials: "same-origin", signal: controller.signal, headers: { Accept: "application/json" },
      });
      if (!response.ok) throw new Error(response.statusText);
      const people = (await response.json()).filter((p) => !exclude(p));
      statusEl.textContent = people.length ? "" : T.nobody;
      resultsEl.replaceChildren(...people.map((p) => {
        const parts = [el("span", { class: "pick-name" }, p.name), el("span", { class: "pick-dept" }, p.department || ""),
          el("span", { class: p.online ? "presence-on" : "presence-off" }, p.online ? T.online : T.offline)];
        if (!multiple) {
          const button = el("button", { type: "button" }, ...parts);
          button.addEventListener("click", () => onPick(p, button));
          return el("li", { class: "pick" }, button);
        }
        const box = el("input", { type: "checkbox", value: String(p.id) });
        box.checked = chosen.has(p.id);
        box.addEventListener("change", () => { if (box.checked) chosen.set(p.id, p.name); else chosen.delete(p.id); onPick?.(); });
        return el("li", { class: "pick" }, el("label", {}, box, ...parts));
      }));
    } catch (err) {
      if (err.name !== "AbortError") statusEl.textContent = T.search_failed;
    }
  }
  inputEl.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(run, 250); });
  return run;
}

function setUpDialogs() {
  for (const dialog of document.querySelectorAll(".talk-dialog")) {
    dialog.addEventListener("click", (e) => { if (e.target.closest("[data-close]")) dialog.close(); });
  }

  // New 1:1
  const direct = document.getElementById("dlg-direct");
  const directError = document.getElementById("direct-error");
  const runDirect = peopleSearch({
    inputEl: document.getElementById("direct-q"),
    statusEl: document.getElementById("direct-status"),
    resultsEl: document.getElementById("direct-results"),
    onPick: async (p, button) => {
      button.disabled = true;
      try {
        const room = await api("talk/rooms/direct/", { method: "POST", data: { person_id: p.id } });
        location.href = room.url;
      } catch (err) {
        directError.textContent = fmt(T.failed, { message: errorText(err) });
        directError.hidden = false;
        button.disabled = false;
      }
    },
  });
  document.getElementById("new-direct")?.addEventListener("click", () => {
    directError.hidden = true;
    direct.showModal();
    runDirect();
  });

  // New group
  const group = document.getElementById("dlg-group");
  const groupForm = document.getElementById("group-form");
  const groupError = document.getElementById("group-error");
  const chosen = new Map();
  const showChosen = () => {
    document.getElementById("group-chosen").textContent = chosen.size ? `${fmt(T.selected, { n: chosen.size })}: ${[...chosen.values()].join("、")}` : "";
  };
  const runGroup = peopleSearch({
    inputEl: document.getElementById("group-q"),
    statusEl: document.getElementById("group-status"),
    resultsEl: document.getElementById("group-results"),
    multiple: true,
    chosen,
    onPick: showChosen,
  });
  document.getElementById("new-group")?.addEventListener("click", () => {
    groupError.hidden = true;
    group.showModal();
    runGroup();
  });
  groupForm?.addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = document.getElementById("group-name").value.trim();
    const fail = (text) => { groupError.textContent = text; groupError.hidden = false; };
    if (!chosen.size) { fail(T.choose_people); return; }
    const button = document.getElementById("group-create");
    button.disabled = true;
    try {
      const room = await api("talk/rooms/", { method: "POST", data: { name, member_ids: [...chosen.keys()] } });
      location.href = room.url;
    } catch (err) {
      fail(errorText(err));
      button.disabled = false;
    }
  });

  if (!settingsDialog) return;
  document.getElementById("room-settings")?.addEventListener("click", () => {
    settingsStatus("");
    renderMembers();
    settingsDialog.showModal();
    pollPresence();
  });
  document.getElementById("rename-form")?.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const detail = await api(`talk/rooms/${R.id}/`, { method: "PATCH", data: { name: document.getElementById("rename-input").value } });
      R.name = detail.name;
      document.getElementById("room-name").textContent = detail.name;
      const r = rooms.get(R.id);
      if (r?.summary) { r.summary.name = detail.name; renderRoom(r); }
      settingsStatus(T.saved);
    } catch (err) {
      settingsStatus(errorText(err), true);
    }
  });
  membersEl?.addEventListener("click", async (e) => {
    const button = e.target.closest("[data-remove]");
    if (!button || !confirm(fmt(T.confirm_remove, { name: button.dataset.name }))) return;
    try {
      await api(`talk/rooms/${R.id}/members/${button.dataset.remove}/`, { method: "DELETE" });
      R.members = R.members.filter((m) => String(m.id) !== button.dataset.remove);
      renderMembers();
    } catch (err) {
      settingsStatus(errorText(err), true);
    }
  });
  const adding = new Map();
  const addForm = document.getElementById("add-form");
  const runAdd = addForm && peopleSearch({
    inputEl: document.getElementById("add-q"),
    statusEl: document.getElementById("add-status"),
    resultsEl: document.getElementById("add-results"),
    multiple: true,
    chosen: adding,
    exclude: (p) => (R.members || []).some((m) => m.id === p.id),
  });
  document.getElementById("add-q")?.addEventListener("focus", () => { if (!document.getElementById("add-results").children.length) runAdd(); }, { once: true });
  addForm?.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!adding.size) { settingsStatus(T.choose_people, true); return; }
    try {
      const answer = await api(`talk/rooms/${R.id}/members/`, { method: "POST", data: { person_ids: [...adding.keys()] } });
      R.members = answer.members;
      R.members_count = answer.members.length;
      adding.clear();
      renderMembers();
      renderMeta();
      runAdd();
      settingsStatus(T.added);
    } catch (err) {
      settingsStatus(errorText(err), true);
    }
  });
  document.getElementById("leave")?.addEventListener("click", async () => {
    if (!confirm(T.confirm_leave)) return;
    try {
      await api(`talk/rooms/${R.id}/members/${me.id}/`, { method: "DELETE" });
      location.href = `/${org}/talk/`;
    } catch (err) {
      settingsStatus(errorText(err), true);
    }
  });
}

// --- Live events ---------------------------------------------------------------------------------------
const subscribed = new Set();
onEvent("frame:subscribed", (frame) => subscribed.add(frame.stream));
onEvent("frame:unsubscribed", (frame) => subscribed.delete(frame.stream));
onEvent("frame:error", (frame) => {
  // A room the person may no longer read (removed while away).
  if (frame.code === "not_found" && String(frame.stream || "").startsWith("room.")) removeRoom(Number(frame.stream.slice(5)));
});
function isOpen(frame) { return R && frame.stream === roomStream(R.id); }

onEvent("message.posted", (frame) => { if (isOpen(frame)) addLive(frame.data); listApply(frame); });
for (const type of ["message.edited", "message.deleted"]) {
  onEvent(type, (frame) => { if (isOpen(frame)) { upsert(frame.data); updateReceipts(); } listApply(frame); });
}
onEvent("room.updated", (frame) => {
  if (isOpen(frame)) {
    if ((frame.data.removed || []).includes(me.id)) roomGone();
    else refreshDetail();
  }
  listApply(frame);
});
onEvent("room.read", (frame) => {
  if (isOpen(frame)) {
    const uid = String(frame.data.user);
    read[uid] = Math.max(read[uid] || 0, frame.data.last_read_id);
    updateReceipts();
  }
  listApply(frame);
});
onEvent("room.typing", (frame) => {
  if (!isOpen(frame) || frame.data.user === me.id) return;
  const id = frame.data.user;
  clearTimeout(typers.get(id)?.timer);
  typers.set(id, { name: frame.data.name, timer: setTimeout(() => stopTyping(id), 6000) });
  renderTyping();
});
onEvent("snapshot:room", (frame) => {
  if (isOpen(frame)) onSnapshot(frame.data);
  loadSummary(frame.data.room);
});
onEvent("snapshot:user", () => refreshRoomList());
onEvent("talk.room_added", (frame) => live?.follow(roomStream(frame.data.room), null));
onEvent("talk.room_removed", (frame) => removeRoom(frame.data.room));

// --- Start ---------------------------------------------------------------------------------------------
function startTalk() {
  for (const summary of data.rooms || []) setSummary(summary);
  placeRooms();
  presenceListeners.push(() => { for (const r of rooms.values()) if (r.summary?.kind === "direct") renderRoom(r); renderMeta(); renderMembers(); });

  // Follow the most recent rooms (and the open one) from where the page's data stands.
  const followed = (data.rooms || []).slice(0, data.live_rooms || 60).map((s) => s.id);
  if (R && !followed.includes(R.id)) followed.push(R.id);
  for (const id of followed) live?.follow(roomStream(id), data.seqs?.[roomStream(id)] ?? 0);

  // Tests and the curious: the page follows every room it shows once each has answered its subscription.
  window.talkReady = () => document.body.dataset.live === "open" && followed.every((id) => subscribed.has(roomStream(id)));

  if (R) {
    read = { ...(R.read || {}) };
    readSent = read[String(me.id)] || 0;
    hasMore = R.has_more;
    for (const m of R.messages || []) upsert(m, { isNew: true });
    noMessages.hidden = msgs.size > 0;
    historyEl.textContent = !hasMore && msgs.size ? T.beginning : "";
    renderMeta();
    scrollToBottom();
    maybeMarkRead();
    // Announce what arrives from now on, not the page that was just drawn.
    msgList.setAttribute("aria-live", "polite");
    msgList.setAttribute("aria-relevant", "additions");

    scroller.addEventListener("scroll", () => {
      stuck = atBottom();
      if (stuck && newBelow) newBelow.hidden = true;
      if (stuck) maybeMarkRead();
      closeMenus();
    }, { passive: true });
    new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) loadOlder(); },
      { root: scroller, rootMargin: "300px 0px 0px 0px" }).observe(historyEl);
    newBelow?.addEventListener("click", () => { scrollToBottom(); maybeMarkRead(); });
    document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") maybeMarkRead(); });
    window.addEventListener("focus", () => maybeMarkRead());

    msgList.addEventListener("click", (e) => {
      const button = e.target.closest("button[data-act]");
      if (!button) return;
      const li = button.closest("li");
      const id = Number(li.dataset.id);
      const act = button.dataset.act;
      if (act === "menu") {
        const menu = li.querySelector(".tmsg-menu");
        closeMenus(menu);
        menu.hidden = !menu.hidden;
        button.setAttribute("aria-expanded", String(!menu.hidden));
        if (!menu.hidden) menu.querySelector("button").focus();
      } else if (act === "edit") startEdit(id);
      else if (act === "delete") { li.querySelector(".tmsg-menu").hidden = true; deleteMessage(id); }
      else if (act === "retry") { const p = pending.get(li.dataset.clientId); if (p) enqueue(p); }
      else if (act === "discard") { pending.delete(li.dataset.clientId); li.remove(); showError(""); }
    });
    msgList.addEventListener("keydown", (e) => { if (e.key === "Escape") closeMenus(); });

    if (composer) {
      composer.addEventListener("submit", (e) => { e.preventDefault(); submit(); });
      let lastTyping = 0;
      input.addEventListener("input", () => {
        autoGrow();
        if (input.value.trim() && Date.now() - lastTyping > 3000) {
          lastTyping = Date.now();
          api(`talk/rooms/${R.id}/typing/`, { method: "POST" }).catch(() => {});
        }
      });
      input.addEventListener("keydown", (e) => {
        // Enter sends (Shift+Enter: a new line); never while an input method is composing Japanese.
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229 && !coarse()) {
          e.preventDefault();
          submit();
        }
      });
      document.getElementById("attach")?.addEventListener("click", () => fileInput.click());
      fileInput?.addEventListener("change", () => chooseFile(fileInput.files[0]));
      document.getElementById("file-clear")?.addEventListener("click", () => { clearFile(); input.focus(); });
    }
  }

  setUpDialogs();
  pollPresence();
  setInterval(pollPresence, 30000);
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") pollPresence(); });
}

// --- Talk administration -------------------------------------------------------------------------------
function startAdmin() {
  const form = document.getElementById("settings-form");
  const status = document.getElementById("settings-status");
  const error = document.getElementById("settings-error");
  const days = document.getElementById("retention-days");
  const say = (ok, text) => {
    status.textContent = ok ? text : "";
    status.hidden = !ok;
    error.textContent = ok ? "" : text;
    error.hidden = ok;
  };
  days.addEventListener("input", () => { form.elements.retention.value = "days"; });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const payload = { file_policy: form.elements.file_policy.value };
    if (form.elements.retention.value === "forever") payload.retention_days = null;
    else {
      const n = Number(days.value);
      if (!Number.isInteger(n) || n < 1 || n > 3650) { say(false, T.retention_days); days.focus(); return; }
      payload.retention_days = n;
    }
    try {
      const saved = await api("talk/settings/", { method: "PATCH", data: payload });
      days.value = saved.retention_days ?? "";
      say(true, T.saved);
    } catch (err) {
      say(false, fmt(T.failed, { message: errorText(err) }));
    }
  });

  const q = document.getElementById("access-q");
  const list = document.getElementById("access-list");
  const more = document.getElementById("access-more");
  const accessStatus = document.getElementById("access-status");
  const licence = document.getElementById("licence");
  let offset = 0;
  let timer = null;
  let controller = null;
  let seats = null;                      // {used, limit} of talk licences

  function toggle(person, field, label) {
    const box = el("input", { type: "checkbox", role: "switch", "data-field": field });
    box.checked = person[field];
    return el("label", { class: "switch" }, box, el("span", {}, label),
      el("span", { class: "state-on", "aria-hidden": "true" }, T.on), el("span", { class: "state-off", "aria-hidden": "true" }, T.off));
  }

  function row(person) {
    return el("li", { class: "access-row", "data-person": String(person.id) },
      el("span", { class: "access-who" }, el("strong", {}, person.name),
        el("small", {}, [person.department, person.login_id].filter(Boolean).join(" · "))),
      toggle(person, "talk_available", T.uses_talk),
      toggle(person, "may_download_logs", T.may_download),
      el("p", { class: "error access-error", role: "alert", hidden: true }));
  }

  async function load({ append = false } = {}) {
    controller?.abort();
    controller = new AbortController();
    if (!append) offset = 0;
    try {
      const response = await fetch(`/${org}/api/talk/access/?q=${encodeURIComponent(q.value.trim())}&offset=${offset}`, {
        credentials: "same-origin", signal: controller.signal, headers: { Accept: "application/json" },
      });
      if (!response.ok) throw new Error(response.statusText);
      const page = await response.json();
      if (!append) list.replaceChildren();
      list.append(...page.people.map(row));
      offset += page.people.length;
      more.hidden = !page.has_more;
      accessStatus.textContent = list.children.length ? "" : T.nobody;
      seats = { ...page.licence };
      licence.textContent = fmt(T.licence, seats);
    } catch (err) {
      if (err.name !== "AbortError") accessStatus.textContent = T.network;
    }
  }

  list.addEventListener("change", async (e) => {
    const box = e.target.closest("input[data-field]");
    if (!box) return;
    const li = box.closest("li");
    const problem = li.querySelector(".access-error");
    box.disabled = true;
    try {
      const person = await api(`talk/access/${li.dataset.person}/`, { method: "PATCH", data: { [box.dataset.field]: box.checked } });
      for (const other of li.querySelectorAll("input[data-field]")) other.checked = person[other.dataset.field];
      problem.hidden = true;
      if (box.dataset.field === "talk_available" && seats) {
        seats.used += person.talk_available ? 1 : -1;
        licence.textContent = fmt(T.licence, seats);
      }
    } catch (err) {
      box.checked = !box.checked;     // it did not change
      problem.textContent = fmt(T.failed, { message: errorText(err) });
      problem.hidden = false;
    } finally {
      box.disabled = false;
    }
  });
  q.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => load(), 250); });
  more.addEventListener("click", () => load({ append: true }));
  load();
}

// --- Talk logs -----------------------------------------------------------------------------------------
async function startLogs() {
  const status = document.getElementById("logs-status");
  const table = document.getElementById("logs-table");
  const tbody = document.getElementById("logs-body");
  const latest = document.getElementById("latest");
  let answer;
  try {
    answer = await api("talk/logs/");
  } catch {
    status.textContent = T.failed;
    return;
  }
  if (answer.latest) {
    latest.replaceChildren(el("a", { class: "button", href: answer.latest.url, download: "" }, icon("download"), ` ${T.download}`), " ",
      el("span", { class: "hint" }, fmt(T.messages, { n: answer.latest.message_count.toLocaleString(lang) })));
  }
  const files = answer.files || [];
  status.textContent = files.length ? "" : T.none;
  table.hidden = !files.length;
  tbody.replaceChildren(...files.map((f) => el("tr", {},
    el("td", {}, new Date(`${f.day}T00:00:00`).toLocaleDateString(lang, { year: "numeric", month: "long", day: "numeric", weekday: "short" }),
      f.part > 1 ? ` (${fmt(T.part, { n: f.part })})` : ""),
    el("td", { class: "num" }, fmt(T.messages, { n: f.message_count.toLocaleString(lang) })),
    el("td", { class: "num" }, size(f.size)),
    el("td", {}, el("a", { href: f.url, download: f.name }, icon("download"), f.name)))));
}

if (document.getElementById("talk")) startTalk();
else if (document.getElementById("talk-admin")) startAdmin();
else if (document.getElementById("talk-logs")) startLogs();
