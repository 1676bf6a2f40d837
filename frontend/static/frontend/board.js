// The live disaster board (/<slug>/safety/incidents/<id>/board/). The first screen comes with the page
// (#board-data is `board_snapshot`, #board-page the page's settings, #board-texts every word, translated).
// The board's stream (`board.<incident>` or `board.<incident>-<department>`, in #board[data-stream]) is followed
// through app.js `Live.follow` from the seq the page was drawn at (#board[data-seq], read with the snapshot), so
// a board that has not moved since only answers "subscribed": a snapshot replaces everything, a `board.tally`
// frame replaces the numbers (absolute counts, so a missed frame heals on the next), a `board.instruction` frame
// adds an instruction. Once the incident is completed the board is frozen (no form; the report shows how long
// 25/50/75 % took), but a frame still corrects its numbers: an answer that committed as the incident completed.
// The people list reads GET /api/safety/incidents/<id>/results/ (at most every few seconds while frames
// arrive); instructions and the instruction room go to the board API.
import { api, onEvent } from "./app.js";

const live = window.tsunagu?.live;

const root = document.getElementById("board");
const P = readJson("board-page");
const T = readJson("board-texts");
const L = P.labels || {};
const lang = document.documentElement.lang || "ja";
const TZ = P.timezone || "Asia/Tokyo";
const STATUSES = ["safe", "minor", "serious", "answered", "none"];
const base = `safety/incidents/${P.incident_id}/`;

let board = readJson("board-data");
let frozen = !!board.frozen;
let everLive = false;

// --- Helpers -------------------------------------------------------------------------------------------

function readJson(id) {
  const node = document.getElementById(id);
  try { return node ? JSON.parse(node.textContent) : {}; } catch { return {}; }
}

// "%(n)s people" with {n: 3} → "3 people"; "%%" → "%"
function fmt(template, values = {}) {
  return String(template ?? "")
    .replace(/%\((\w+)\)[sd]/g, (_, key) => String(values[key] ?? ""))
    .replace(/%%/g, "%");
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    // Through the CSSOM: the Content-Security-Policy blocks a style attribute set with setAttribute.
    else if (key === "style") node.style.cssText = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function svgEl(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.flat().filter(Boolean));
  return node;
}

const $ = (id) => document.getElementById(id);

function show(node, text) {
  if (!node) return;
  node.textContent = text || "";
  node.hidden = !text;
}

function setText(node, text) {
  if (node && node.textContent !== text) node.textContent = text;
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

function errorText(err) {
  if (!err || !err.status) return T.network;
  const fields = err.body?.fields;
  if (fields && typeof fields === "object") {
    const first = Object.values(fields).flat()[0];
    if (first) return typeof first === "string" ? first : JSON.stringify(first);
  }
  return err.body?.message || err.message || T.network;
}

// The answer rate as a whole percent, rounded half up, never 100 % while someone has not answered
// (frontend/board_views.py rate_percent rounds the same way).
function ratePercent(answered, total) {
  if (!total) return 0;
  const percent = Math.floor((answered * 100) / total + 0.5);
  return percent === 100 && answered < total ? 99 : percent;
}

// "12分30秒" / "12 min 30 s" (board_views.duration_text)
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  if (h) return fmt(T.h_m, { h, m });
  if (m) return fmt(T.m_s, { m, s: r });
  return fmt(T.s, { s: r });
}

const dayKey = (d) => d.toLocaleDateString("en-CA", { timeZone: TZ });

// "14:05" today, "3/11 14:05" on another day (board_views._clock)
function clock(iso, { seconds = false } = {}) {
  if (!iso) return "";
  const d = new Date(iso);
  const options = { timeZone: TZ, hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  if (seconds) options.second = "2-digit";
  const time = d.toLocaleTimeString("en-GB", options);
  if (dayKey(d) === dayKey(new Date())) return time;
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-US", { timeZone: TZ, month: "numeric", day: "numeric" })
    .formatToParts(d).map((p) => [p.type, p.value]));
  return `${parts.month}/${parts.day} ${time}`;
}

// Milliseconds to add to a UTC instant to read the board's local wall clock (for round tick times).
function zoneOffset(ms) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-US", {
    timeZone: TZ, hourCycle: "h23", year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "numeric", second: "numeric",
  }).formatToParts(new Date(ms)).map((p) => [p.type, p.value]));
  const wall = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour % 24, +parts.minute, +parts.second);
  return wall - Math.floor(ms / 1000) * 1000;
}

function statusPill(status) {
  const key = status || "none";
  return el("span", { class: `st st-${key}`, text: L.answer?.[key] || key });
}

function helpFlag() {
  return el("span", { class: "help-flag", text: T.needs_help });
}

const announcer = $("board-announce");
function announce(text) {
  if (!announcer || !text) return;
  announcer.textContent = "";
  // A fresh text node, so a screen reader reads it even if it equals the last one.
  setTimeout(() => { announcer.textContent = text; }, 50);
}

// --- Connection state ----------------------------------------------------------------------------------

function setLive(state) {
  root.dataset.liveState = state;
  if (state === "live") everLive = true;
  setText($("board-live-text"), state === "live" ? T.live : (everLive ? T.reconnecting : T.connecting));
}

function stampUpdated() {
  const text = fmt(T.updated, { time: clock(new Date().toISOString(), { seconds: true }) });
  setText(root.querySelector(".board-updated"), text);
}

// --- Header, totals, report ----------------------------------------------------------------------------

function renderHeader(b) {
  const i = b.incident;
  const status = $("board-status");
  status.className = `inc-status inc-${i.status}`;
  // Frames are shared by every viewer: the word comes from this page's own language.
  setText(status, L.incident?.[i.status] || i.status_label || i.status);
  setText($("board-title"), i.title);
  root.classList.toggle("board-is-frozen", !!b.frozen);
  $("board-frozen").hidden = !b.frozen;
  setText($("board-frozen-when"), i.completed_at ? fmt(T.completed_at, { time: clock(i.completed_at) }) : "");
}

function renderTotals(b) {
  const t = b.total;
  const rate = ratePercent(t.answered, t.total);
  setText(root.querySelector('[data-board="rate"]'), `${rate}%`);
  setText(root.querySelector('[data-board="answered"]'), String(t.answered));
  setText(root.querySelector('[data-board="total"]'), String(t.total));
  setText(root.querySelector('[data-board="needs_help"]'), String(t.needs_help));
  $("board-rate-bar").style.width = `${rate}%`;
  for (const key of STATUSES) {
    const n = t.counts[key] || 0;
    setText(root.querySelector(`[data-count="${key}"]`), String(n));
    root.querySelector(`[data-kpi="${key}"]`)?.classList.toggle("zero", !n);
  }
  const showAnswered = !b.incident.has_safety || !!t.counts.answered;
  root.querySelector('[data-kpi="answered"]').hidden = !showAnswered;
  const legend = root.querySelector('[data-legend="answered"]');
  if (legend) legend.hidden = !showAnswered;
  root.querySelector('[data-kpi="serious"]').classList.toggle("alert", !!t.counts.serious);
  root.querySelector('[data-kpi="needs_help"]').classList.toggle("alert", !!t.needs_help);
  root.querySelector('[data-kpi="needs_help"]').classList.toggle("zero", !t.needs_help);
}

function milestoneText(m, isFrozen) {
  if (m.seconds === null || m.seconds === undefined) return isFrozen ? T.milestone_never : T.milestone_not_yet;
  return fmt(T.milestone_at, { duration: duration(m.seconds), time: clock(m.at) });
}

function renderMilestones(b) {
  $("board-milestones").replaceChildren(...b.milestones.map((m) => el("li", {
    "data-milestone": m.percent, class: m.seconds === null ? "pending" : "reached" },
  el("b", { text: fmt(T.milestone, { percent: m.percent }) }), " ", el("span", { text: milestoneText(m, b.frozen) }))));
}

function renderReport(b) {
  const report = $("board-report");
  report.hidden = !b.frozen;
  if (!b.frozen) return;
  const t = b.total;
  $("board-report-rate").replaceChildren(el("b", { text: `${ratePercent(t.answered, t.total)}%` }), " ",
    el("span", { class: "report-of", text: fmt(T.report_of, { answered: t.answered, total: t.total }) }));
  for (const m of b.milestones) {
    const dd = report.querySelector(`[data-milestone="${m.percent}"] dd`);
    if (!dd) continue;
    dd.textContent = milestoneText(m, true);
    dd.classList.toggle("not-reached", m.seconds === null);
  }
  const start = Date.parse(b.incident.opened_at), end = Date.parse(b.incident.completed_at);
  setText($("board-report-elapsed"), Number.isFinite(start) && Number.isFinite(end) ? duration((end - start) / 1000) : "");
}

// --- People who need attention -------------------------------------------------------------------------

const attentionKey = (a) => `${a.id}:${a.status}:${a.needs_help}`;
let seenAttention = new Set((board.attention || []).map(attentionKey));
const freshUntil = new Map();  // attention key -> until when it is highlighted as new
let attentionDrawn = "";

function attentionItem(a) {
  const fresh = (freshUntil.get(attentionKey(a)) || 0) > Date.now();
  const classes = ["att", a.status === "serious" ? "att-serious" : "", a.needs_help ? "att-help" : "", fresh ? "fresh" : ""]
    .filter(Boolean).join(" ");
  return el("li", { "data-person": a.id, class: classes },
    el("div", { class: "att-top" },
      statusPill(a.status),
      a.needs_help ? helpFlag() : null,
      el("strong", { class: "att-name", text: a.name }),
      el("span", { class: "att-dept", text: a.department || T.no_department }),
      a.answered_at ? el("time", { class: "att-time", datetime: a.answered_at, text: clock(a.answered_at) }) : null),
    a.comment ? el("p", { class: "att-comment", text: a.comment }) : null);
}

function renderAttention(b, { quiet = false } = {}) {
  const rows = b.attention || [];
  const fresh = quiet ? [] : rows.filter((a) => !seenAttention.has(attentionKey(a)));
  seenAttention = new Set(rows.map(attentionKey));
  for (const a of fresh) freshUntil.set(attentionKey(a), Date.now() + 3000);
  // Frames repeat the whole list: redraw it only when it changed (a scrolled list stays where it was).
  const drawn = JSON.stringify(rows);
  if (drawn !== attentionDrawn) {
    attentionDrawn = drawn;
    $("board-attention").replaceChildren(...rows.map(attentionItem));
  }
  $("board-attention-empty").hidden = rows.length > 0;
  setText($("board-attention-count"), String(b.total.attention || 0));
  const more = $("board-attention-more");
  more.hidden = (b.total.attention || 0) <= rows.length;
  if (!more.hidden) more.textContent = fmt(T.attention_more, { shown: rows.length, total: b.total.attention });
  $("board-attention-card").classList.toggle("has-rows", rows.length > 0);
  // Requests for help are read out at once (assertive), the newest first, a few at a time.
  if (!fresh.length) return;
  announce(fresh.slice(0, 3).map((a) => fmt(a.needs_help ? T.attention_new_help : T.attention_new,
    { name: a.name, department: a.department || T.no_department, status: L.answer?.[a.status] || a.status })).join(" / "));
}

// --- People nobody could reach --------------------------------------------------------------------------

// Unanswered people whose every push and e-mail failed (or who have neither), with their phone numbers as
// links (the organisation's phone scheme, as on directory cards) and the reasons as words, never addresses.
let unreachableDrawn = "";

function unreachableItem(u) {
  const phones = u.phones || [];
  return el("li", { "data-person": u.id, class: "unr" },
    el("div", { class: "unr-top" }, el("strong", { class: "unr-name", text: u.name }), " ",
      el("span", { class: "unr-dept", text: u.department || T.no_department })),
    el("ul", { class: "unr-reasons" }, (u.reasons || []).map((r) => el("li", { text: L.reason?.[r] || r }))),
    u.escalated_at ? el("p", { class: "unr-escalated", text: fmt(T.unreachable_escalated, { time: clock(u.escalated_at) }) }) : null,
    el("div", { class: "unr-phones" }, phones.length
      ? phones.map((p) => el("a", { class: "button unr-call", href: p.href, "aria-label": fmt(T.call, { name: u.name, number: p.number }) },
        el("span", { "aria-hidden": "true", text: "☎" }), "\u00a0", el("span", { class: "unr-kind", text: T[`phone_${p.kind}`] || p.kind }), "\u00a0", p.number))
      : el("span", { class: "hint", text: T.unreachable_no_phone })));
}

function renderUnreachable(b) {
  const rows = b.unreachable || [];
  const total = b.unreachable_total || 0;
  const card = $("board-unreachable-card");
  card.hidden = !rows.length;
  const drawn = JSON.stringify(rows);
  if (drawn !== unreachableDrawn) {
    unreachableDrawn = drawn;
    $("board-unreachable").replaceChildren(...rows.map(unreachableItem));
  }
  setText($("board-unreachable-count"), String(total));
  const more = $("board-unreachable-more");
  more.hidden = total <= rows.length;
  if (!more.hidden) more.textContent = fmt(T.unreachable_more, { shown: rows.length, total });
}

// --- Answer rate over time -----------------------------------------------------------------------------

const TICK_MINUTES = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080];

function renderChart(b) {
  const svg = $("board-chart");
  const box = svg.parentElement;
  const W = Math.max(260, Math.floor(box.clientWidth || 600));
  const H = W < 520 ? 190 : 230;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  const m = { l: 42, r: 46, t: 12, b: 26 };
  const pw = W - m.l - m.r, ph = H - m.t - m.b;
  const series = b.series || { points: [], width: 10 };
  const total = b.total.total;
  const start = Date.parse(series.start || b.incident.opened_at);
  const step = (series.width || 10) * 1000;
  const points = series.points || [];
  const end = start + Math.max(1, points.length) * step;
  const x = (t) => m.l + ((t - start) / (end - start)) * pw;
  const y = (r) => m.t + (1 - r) * ph;
  const parts = [];

  // Guide lines: 0 and 100 % solid, 25/50/75 % dashed, each labelled.
  for (const r of [0, 0.25, 0.5, 0.75, 1]) {
    const guide = r > 0 && r < 1;
    parts.push(svgEl("line", { x1: m.l, x2: m.l + pw, y1: y(r), y2: y(r), class: guide ? "guide" : "axis" }),
      svgEl("text", { x: m.l - 6, y: y(r) + 4, class: guide ? "tick tick-guide" : "tick", "text-anchor": "end", text: `${r * 100}%` }));
  }
  // Time ticks on round minutes of the local clock.
  const spanMin = (end - start) / 60000;
  const most = W < 400 ? 3 : W < 520 ? 4 : 6;
  const every = (TICK_MINUTES.find((n) => spanMin / n <= most) || 10080) * 60000;
  const offset = zoneOffset(start);
  for (let tick = Math.ceil((start + offset) / every) * every - offset; tick <= end; tick += every) {
    parts.push(svgEl("line", { x1: x(tick), x2: x(tick), y1: m.t + ph, y2: m.t + ph + 4, class: "axis" }),
      svgEl("text", { x: x(tick), y: H - 6, class: "tick", "text-anchor": "middle", text: clock(new Date(tick).toISOString()) }));
  }
  const rate = ratePercent(b.total.answered, total);
  if (!total) {
    parts.push(svgEl("text", { x: m.l + pw / 2, y: m.t + ph / 2, class: "chart-empty", "text-anchor": "middle", text: T.chart_empty }));
  } else {
    const xy = [[start, 0], ...points.map((n, i) => [start + (i + 1) * step, Math.min(1, n / total)])];
    const line = xy.map(([t, r], i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(r).toFixed(1)}`).join("");
    const last = xy[xy.length - 1];
    parts.push(
      svgEl("path", { d: `${line}L${x(last[0]).toFixed(1)},${y(0)}L${x(start).toFixed(1)},${y(0)}Z`, class: "area" }),
      svgEl("path", { d: line, class: "line" }));
    // Each milestone reached sits where the line crosses its guide (the line is drawn per interval, so the
    // exact moment would float beside it).
    const crossing = (level) => {
      for (let i = 1; i < xy.length; i += 1) {
        const [t0, r0] = xy[i - 1], [t1, r1] = xy[i];
        if (r1 >= level && r0 < level) return t0 + ((level - r0) / (r1 - r0)) * (t1 - t0);
      }
      return null;
    };
    for (const mark of b.milestones || []) {
      if (!mark.at) continue;
      const t = crossing(mark.percent / 100);
      if (t === null) continue;
      parts.push(svgEl("circle", { cx: x(t), cy: y(mark.percent / 100), r: 4.5, class: "milestone-dot" },
        svgEl("title", { text: `${fmt(T.milestone, { percent: mark.percent })}: ${milestoneText(mark, b.frozen)}` })));
    }
    parts.push(svgEl("circle", { cx: x(last[0]), cy: y(last[1]), r: 4, class: "now-dot" }),
      svgEl("text", { x: Math.min(W - 4, x(last[0]) + 6), y: Math.max(m.t + 10, y(last[1]) + 4), class: "now-label",
        "text-anchor": x(last[0]) + 44 > W ? "end" : "start", text: `${rate}%` }));
  }
  svg.replaceChildren(...parts);
  svg.setAttribute("aria-label", fmt(T.chart_label, { rate, elapsed: duration((end - start) / 1000) }));
}

// --- Departments ---------------------------------------------------------------------------------------

function deptRow(d) {
  const total = d.total || 1;
  const shown = STATUSES.filter((k) => d.counts[k]);
  const percent = ratePercent(d.answered, d.total);
  const name = d.name || T.no_department;
  return el("li", { class: "dept", "data-department": d.id ?? "none" },
    d.id === null || d.id === undefined
      ? el("span", { class: "dept-name", text: name })
      : el("button", { type: "button", class: "dept-name", "data-filter-department": d.id, title: T.filter_department, text: name }),
    el("span", { class: "dept-bar", role: "img", "aria-label": fmt(T.department_of, { name, answered: d.answered, total: d.total, rate: percent }) },
      shown.map((k) => el("span", { class: `seg seg-${k}`, style: `width:${((d.counts[k] * 100) / total).toFixed(2)}%` }))),
    el("span", { class: "dept-rate" }, el("b", { text: `${percent}%` }), " ", el("span", { class: "dept-of", text: `${d.answered}/${d.total}` })),
    el("span", { class: "dept-counts" },
      shown.map((k) => el("span", { class: `dc dc-${k}` }, el("span", { class: "sr-only", text: `${L.answer?.[k] || k} ` }), String(d.counts[k]))),
      d.needs_help ? el("span", { class: "dc dc-help" }, el("span", { class: "sr-only", text: `${T.needs_help} ` }), String(d.needs_help)) : null));
}

const orderSelect = $("board-departments-order");
let departmentsDrawn = "";
function renderDepartments(b) {
  const rows = [...(b.departments || [])];
  const order = orderSelect?.value || "tree";
  if (order === "rate") rows.sort((a, c) => a.rate - c.rate || c.total - a.total);
  else if (order === "attention") {
    const weight = (d) => d.needs_help + (d.counts.serious || 0);
    rows.sort((a, c) => weight(c) - weight(a) || a.rate - c.rate);
  }
  const drawn = `${order}:${JSON.stringify(rows)}`;
  if (drawn !== departmentsDrawn) {
    departmentsDrawn = drawn;
    $("board-departments").replaceChildren(...rows.map(deptRow));
  }
  $("board-departments-empty").hidden = rows.length > 0;
}
orderSelect?.addEventListener("change", () => renderDepartments(board));

// --- Instructions --------------------------------------------------------------------------------------

function instructionItem(n) {
  return el("li", { "data-instruction": n.id },
    el("p", { class: "instruction-body", text: n.body }),
    el("p", { class: "instruction-meta" }, n.author ? `${n.author} · ` : "",
      el("time", { datetime: n.created_at, text: clock(n.created_at) })));
}

function renderInstructions(rows) {
  $("board-instructions").replaceChildren(...rows.map(instructionItem));
  $("board-instructions-empty").hidden = rows.length > 0;
}

function addInstruction(n) {
  const list = $("board-instructions");
  if (!n || list.querySelector(`li[data-instruction="${n.id}"]`)) return;
  const item = instructionItem(n);
  item.classList.add("fresh");
  // Newest first: before the first one that is older (frames can cross a snapshot).
  const older = [...list.children].find((li) => Number(li.dataset.instruction) < n.id);
  list.insertBefore(item, older || null);
  $("board-instructions-empty").hidden = true;
  markMore(list);
  board.instructions = [n, ...(board.instructions || [])];
}

const form = $("instruction-form");
let posting = false;
function syncForm(b) {
  if (!form) return;
  form.hidden = !!b.frozen;
  const open = !!b.incident.is_open && !b.frozen;
  form.elements.body.disabled = !open;
  $("instruction-send").disabled = !open || posting;
  $("instruction-closed").hidden = open;
}

if (form) {
  const body = form.elements.body;
  const max = P.instruction_max || 2000;
  const counter = $("instruction-count");
  const error = $("instruction-error");
  const status = $("instruction-status");
  const send = $("instruction-send");
  const sendText = send.innerHTML;
  const count = () => {
    counter.textContent = fmt(T.chars, { n: body.value.length, max });
    counter.classList.toggle("over", body.value.length > max);
  };
  body.addEventListener("input", () => { count(); show(status, ""); });
  body.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
  });
  count();
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    show(error, "");
    show(status, "");
    const text = body.value.trim();
    if (!text) { show(error, T.instruction_empty); body.setAttribute("aria-invalid", "true"); body.focus(); return; }
    if (text.length > max) { show(error, fmt(T.instruction_long, { n: max })); body.setAttribute("aria-invalid", "true"); body.focus(); return; }
    body.removeAttribute("aria-invalid");
    posting = true;
    send.disabled = true;
    send.textContent = T.sending;
    try {
      const posted = await api(`${base}instructions/`, { method: "POST", data: { body: text } });
      addInstruction(posted);
      // Only if it still holds what was sent: someone may already be typing the next one.
      if (body.value.trim() === text) body.value = "";
      count();
      show(status, T.instruction_sent);
    } catch (err) {
      show(error, fmt(T.failed, { message: errorText(err) }));
      body.focus();
    } finally {
      posting = false;
      send.innerHTML = sendText;
      syncForm(board);
    }
  });
}

// --- Instruction room ----------------------------------------------------------------------------------

let room = P.room;
function renderRoom() {
  const box = $("board-room-body");
  const parts = [];
  if (room && room.is_member) {
    parts.push(el("a", { class: "button primary", id: "board-room-link", href: room.url },
      T.room_open, "\u00a0", el("span", { "aria-hidden": "true", text: "›" })));
    if (P.can_open_room && P.uses_talk) parts.push(el("button", { type: "button", id: "board-room-add", "aria-haspopup": "dialog", text: T.room_add }));
  } else if (room) {
    parts.push(el("p", { class: "hint", text: T.room_members_only }));
    if (P.can_open_room && P.uses_talk) parts.push(el("button", { type: "button", class: "primary", id: "board-room-join", text: T.room_join }));
  } else if (P.can_open_room && P.uses_talk) {
    parts.push(el("button", { type: "button", class: "primary", id: "board-room-create", "aria-haspopup": "dialog", text: T.room_create }));
  } else {
    parts.push(el("p", { class: "hint", text: P.can_open_room ? T.room_needs_talk : T.room_none }));
  }
  box.replaceChildren(...parts);
  const submit = $("room-submit");
  if (submit) submit.textContent = room ? T.room_add_chosen : T.room_create;
}

async function roomPost(memberIds) {
  const data = await api(`${base}room/`, { method: "POST", data: { member_ids: memberIds } });
  const created = !room;
  room = data.room;
  renderRoom();
  show($("board-room-status"), created ? T.room_created : T.room_added);
  return data;
}

const dialog = $("room-dialog");
if (dialog) {
  const chosen = new Map();
  const found = $("room-found");
  const status = $("room-q-status");
  const input = $("room-q");
  const dialogError = $("room-dialog-error");
  const renderChosen = () => {
    $("room-chosen").replaceChildren(...[...chosen.values()].map((p) => el("li", { class: "chip" },
      el("span", { text: p.department ? `${p.name}（${p.department}）` : p.name }),
      el("button", { type: "button", "aria-label": `${T.remove}: ${p.name}`, title: T.remove, onclick: () => {
        chosen.delete(p.id); renderChosen(); search();
      } }, "✕"))));
    $("room-chosen-count").textContent = chosen.size ? fmt(T.chosen_n, { n: chosen.size }) : (room ? "" : T.chosen_none);
  };
  const row = (p) => el("li", {},
    el("span", { class: "who" }, el("strong", { text: p.name }), el("span", { class: "sub-line", text: p.department || "" })),
    el("button", { type: "button", disabled: chosen.has(p.id), "aria-label": `${T.add}: ${p.name}`, onclick: (e) => {
      chosen.set(p.id, p); renderChosen(); e.target.disabled = true;
    } }, T.add));
  let seq = 0;
  const search = async () => {
    const q = input.value.trim();
    const mine = ++seq;
    if (!q) { found.replaceChildren(); status.textContent = ""; return; }
    status.textContent = T.searching;
    try {
      const people = await api(`talk/people/?q=${encodeURIComponent(q)}`);
      if (mine !== seq) return;
      found.replaceChildren(...people.map(row));
      status.textContent = people.length ? "" : T.nobody_found;
    } catch (err) {
      if (mine !== seq) return;
      status.textContent = err?.status ? fmt(T.failed, { message: errorText(err) }) : T.search_failed;
    }
  };
  input.addEventListener("input", debounce(search, 250));
  dialog.addEventListener("click", (e) => {
    if (e.target.closest("[data-close]")) { dialog.close(); return; }
    if (e.target === dialog) {
      const box = dialog.getBoundingClientRect();
      if (e.clientX < box.left || e.clientX > box.right || e.clientY < box.top || e.clientY > box.bottom) dialog.close();
    }
  });
  $("room-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    show(dialogError, "");
    const submit = $("room-submit");
    submit.disabled = true;
    try {
      await roomPost([...chosen.keys()]);
      chosen.clear();
      dialog.close();
      $("board-room-link")?.focus();
    } catch (err) {
      show(dialogError, fmt(T.failed, { message: errorText(err) }));
    } finally {
      submit.disabled = false;
    }
  });
  $("board-room").addEventListener("click", async (e) => {
    const button = e.target.closest("button");
    if (!button) return;
    if (button.id === "board-room-create" || button.id === "board-room-add") {
      show($("board-room-status"), "");
      show($("board-room-error"), "");
      show(dialogError, "");
      input.value = "";
      found.replaceChildren();
      status.textContent = "";
      renderChosen();
      dialog.showModal();
      input.focus();
    } else if (button.id === "board-room-join") {
      button.disabled = true;
      show($("board-room-error"), "");
      try { await roomPost([]); $("board-room-link")?.focus(); } catch (err) {
        button.disabled = false;
        show($("board-room-error"), fmt(T.failed, { message: errorText(err) }));
      }
    }
  });
}

// --- People --------------------------------------------------------------------------------------------

const people = { answer: "", department: "", q: "", offset: 0 };
const pageSize = P.people_page || 50;
let peopleSeq = 0;
let lastPeopleLoad = Date.now();
let peopleTimer = null;
let peopleTotal = P.people?.total || 0;

function personRow(r) {
  const comment = typeof r.answer?.values?.comment === "string" ? r.answer.values.comment.slice(0, 200) : "";
  return el("tr", { "data-person": r.person.id },
    el("td", {}, el("strong", { class: "who", text: r.person.name }), el("span", { class: "sub-line", text: r.person.department || T.no_department })),
    el("td", {}, statusPill(r.status), r.needs_help ? [" ", helpFlag()] : null,
      r.answer?.entered_by ? el("span", { class: "sub-line", text: fmt(T.proxy_by, { name: r.answer.entered_by }) }) : null),
    el("td", {}, r.answered_at ? el("time", { datetime: r.answered_at, text: clock(r.answered_at) }) : null),
    el("td", { class: "people-comment", text: comment }));
}

function renderPeople(data) {
  peopleTotal = data.total;
  const body = $("board-people-body");
  if (!data.results.length) body.replaceChildren(el("tr", {}, el("td", { colspan: 4, class: "empty", text: T.people_none })));
  else body.replaceChildren(...data.results.map(personRow));
  setText($("board-people-count"), fmt(data.total === 1 ? T.people_one : T.people_n, { n: data.total }));
  $("board-people-pager").hidden = data.total <= pageSize;
  $("people-prev").disabled = people.offset <= 0;
  $("people-next").disabled = people.offset + pageSize >= data.total;
  setText($("people-page-info"), data.total
    ? fmt(T.people_showing, { from: people.offset + 1, to: Math.min(people.offset + data.results.length, data.total), total: data.total }) : "");
}

async function loadPeople() {
  const mine = ++peopleSeq;
  lastPeopleLoad = Date.now();
  const params = new URLSearchParams({ limit: pageSize, offset: people.offset, tally: 0 });
  const department = people.department || P.scope_department;
  if (department) params.set("department", department);
  if (people.answer) params.set("answer", people.answer);
  if (people.q) params.set("q", people.q);
  try {
    const data = await api(`${base}results/?${params}`);
    if (mine !== peopleSeq) return;
    if (people.offset && !data.results.length && data.total) {  // the page emptied: go back to the last one
      people.offset = Math.max(0, Math.floor((data.total - 1) / pageSize) * pageSize);
      loadPeople();
      return;
    }
    renderPeople(data);
    show($("board-people-error"), "");
    root.dataset.peopleLoaded = String(Date.now());
  } catch (err) {
    if (mine !== peopleSeq) return;
    show($("board-people-error"), fmt(T.failed, { message: errorText(err) }));
  }
}

// Tally frames come a couple of times a second: the list follows at most every few seconds.
function peopleSoon() {
  if (peopleTimer || document.hidden) return;
  const wait = Math.max(0, lastPeopleLoad + (P.people_refresh_ms || 3000) - Date.now());
  peopleTimer = setTimeout(() => { peopleTimer = null; loadPeople(); }, wait);
}

function peopleNow() {
  clearTimeout(peopleTimer);
  peopleTimer = null;
  people.offset = 0;
  loadPeople();
}

$("board-people-filters").addEventListener("submit", (e) => e.preventDefault());
$("people-answer").addEventListener("change", (e) => { people.answer = e.target.value; peopleNow(); });
$("people-department").addEventListener("change", (e) => { people.department = e.target.value; peopleNow(); });
$("people-q").addEventListener("input", debounce((e) => { people.q = e.target.value.trim().slice(0, 100); peopleNow(); }, 300));
$("people-prev").addEventListener("click", () => { people.offset = Math.max(0, people.offset - pageSize); loadPeople(); });
$("people-next").addEventListener("click", () => { if (people.offset + pageSize < peopleTotal) { people.offset += pageSize; loadPeople(); } });
$("board-departments").addEventListener("click", (e) => {
  const button = e.target.closest("[data-filter-department]");
  if (!button) return;
  const select = $("people-department");
  const id = button.dataset.filterDepartment;
  const value = String(id) === String(P.scope_department) ? "" : id;
  if (![...select.options].some((o) => o.value === value)) return;
  select.value = value;
  people.department = value;
  peopleNow();
  $("board-people").scrollIntoView({ behavior: "smooth", block: "start" });
});
document.addEventListener("visibilitychange", () => { if (!document.hidden && !frozen) peopleSoon(); });
if (P.people) renderPeople(P.people);

// --- The scope of the whole board ----------------------------------------------------------------------

const scopeSelect = $("board-scope");
scopeSelect?.addEventListener("change", () => {
  const value = scopeSelect.value;
  const url = new URL(P.board_url, location.origin);
  if (value) url.searchParams.set("department", value);
  location.href = url.pathname + url.search;
});

// --- Capped lists: say when there is more below ---------------------------------------------------------

const CAPPED = ["board-attention", "board-unreachable", "board-departments", "board-instructions"];
function markMore(list) {
  if (list) list.dataset.more = String(list.scrollHeight - list.scrollTop - list.clientHeight > 4);
}
function markAllMore() { for (const id of CAPPED) markMore($(id)); }
for (const id of CAPPED) $(id)?.addEventListener("scroll", () => markMore($(id)), { passive: true });

// --- Applying what the stream sends --------------------------------------------------------------------

function apply(b, { snapshot = false, quiet = false } = {}) {
  const wasFrozen = frozen;
  board = snapshot ? b : { ...b, instructions: board.instructions };
  frozen = !!b.frozen;
  renderHeader(board);
  renderTotals(board);
  renderAttention(board, { quiet });
  renderUnreachable(board);
  renderChart(board);
  renderMilestones(board);
  renderDepartments(board);
  renderReport(board);
  syncForm(board);
  if (snapshot) renderInstructions(board.instructions || []);
  markAllMore();
  if (frozen && !wasFrozen) { announce(T.frozen_now); loadPeople(); }
  else if (!quiet) peopleSoon();
}

onEvent("snapshot:board", (frame) => {
  if (frame.stream !== P.stream) return;
  root.dataset.seq = String(frame.seq);
  apply(frame.data, { snapshot: true });
  stampUpdated();
  setLive("live");
});

onEvent("board.tally", (frame) => {
  if (frame.stream !== P.stream) return;
  root.dataset.seq = String(frame.seq);
  // Also once frozen: frames are absolute and come when the numbers changed, which after completion means an
  // answer that committed as the incident completed. The frozen page takes the corrected final numbers.
  apply(frame.data);
  stampUpdated();
});

onEvent("board.instruction", (frame) => {
  if (frame.stream !== P.stream) return;
  root.dataset.seq = String(frame.seq);
  addInstruction(frame.data);
});

// Subscribed from the page's own seq with nothing new: the board as drawn is current.
onEvent("frame:subscribed", (frame) => {
  if (frame.stream !== P.stream) return;
  setLive("live");
});

onEvent("frame:error", (frame) => {
  if (frame.stream !== P.stream) return;
  setLive("reconnecting");
  setText($("board-live-text"), fmt(T.stream_error, { message: frame.message || frame.code }));
});

// The socket closed: the board is out of date until the snapshot of the next connection.
new MutationObserver(() => {
  if (document.body.dataset.live === "closed") setLive("reconnecting");
}).observe(document.body, { attributes: true, attributeFilter: ["data-live"] });

// --- Start ---------------------------------------------------------------------------------------------

apply(board, { snapshot: true, quiet: true });
new ResizeObserver(debounce(() => { renderChart(board); markAllMore(); }, 100)).observe($("board-chart").parentElement);
setLive("reconnecting");  // "Connecting…" until the stream answers the subscription
// From the seq the page was drawn at: a board that has not moved since only answers "subscribed", one that has
// a snapshot. Until the socket is open this only records the stream; opening subscribes it.
const drawnSeq = Number(root.dataset.seq);
live?.follow(P.stream, Number.isInteger(drawnSeq) && drawnSeq >= 0 ? drawnSeq : null);
