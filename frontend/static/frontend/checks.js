// Contact checks (連絡先の確認), the administrators' page: start a check, save the schedule, send again to the
// people of the shown problem, and follow a check while it is being sent (its counts and the people list refresh
// every few seconds until it has gone out). The page is rendered whole by the server and its filters are plain
// links; every write goes to the REST API (/<slug>/api/safety/checks/). Texts come translated in #checks-data.
import { api } from "./app.js";

const data = readJson("checks-data");
const texts = data.texts || {};
const labels = data.labels || {};
const org = document.body.dataset.org;
const POLL_MS = 3000;

function readJson(id) {
  const el = document.getElementById(id);
  try { return el ? JSON.parse(el.textContent) : {}; } catch { return {}; }
}

// "%(n)s people" with {n: 3} → "3 people"
function fmt(template, values = {}) {
  return String(template ?? "").replace(/%\((\w+)\)s/g, (_, key) => String(values[key] ?? ""));
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

const alertBox = document.getElementById("checks-alert");
const statusBox = document.getElementById("checks-status");

function showError(err) {
  const message = err?.status ? fmt(texts.failed, { message: err.body?.message || err.message }) : texts.network;
  statusBox.hidden = true;
  alertBox.textContent = message;
  alertBox.hidden = false;
}

function showStatus(message) {
  alertBox.hidden = true;
  statusBox.textContent = message;
  statusBox.hidden = false;
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return d.toDateString() === new Date().toDateString()
    ? time : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

// --- Start now, the schedule ------------------------------------------------------------------------------

const start = document.getElementById("check-start");
start?.addEventListener("click", async () => {
  start.disabled = true;
  showStatus(texts.starting);
  try {
    const check = await api("safety/checks/", { method: "POST", data: {} });
    location.assign(`/${org}/safety/checks/?check=${check.id}`);
  } catch (err) {
    start.disabled = false;
    showError(err);
  }
});

const schedule = document.getElementById("check-schedule");
schedule?.addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = schedule.elements.every_days;
  const raw = input.value.trim();
  const everyDays = raw === "" ? 0 : Number(raw);
  input.removeAttribute("aria-invalid");
  try {
    const saved = await api("safety/checks/schedule/", { method: "PUT", data: { every_days: everyDays } });
    input.value = saved.every_days;
    document.getElementById("schedule-next").textContent = saved.next_at
      ? fmt(texts.next_at, { time: when(saved.next_at) }) : texts.schedule_off;
    showStatus(texts.saved);
  } catch (err) {
    input.setAttribute("aria-invalid", "true");
    showError(err);
  }
});

// --- Send again to the people of the shown problem --------------------------------------------------------

const resend = document.getElementById("check-resend");
resend?.addEventListener("click", async () => {
  if (!confirm(fmt(texts.resend_confirm, { n: data.matched }))) return;
  resend.disabled = true;
  showStatus(texts.resending);
  try {
    const result = await api(`safety/checks/${data.check.id}/resend/`, {
      method: "POST", data: { problems: data.resend_problems },
    });
    showStatus(fmt(texts.resent, { n: result.people }));
    follow();
  } catch (err) {
    showError(err);
  } finally {
    resend.disabled = false;
  }
});

// --- Following a check while it is being sent -------------------------------------------------------------

const list = document.getElementById("check-people");
const rowTemplate = document.getElementById("check-person-row");

function personRow(p) {
  const row = rowTemplate.content.firstElementChild.cloneNode(true);
  row.dataset.id = p.id;
  const slot = (name) => row.querySelector(`[data-slot="${name}"]`);
  const link = slot("name");
  link.href = `/${org}/directory/people/${p.id}/`;
  link.textContent = p.name;
  slot("department").textContent = p.department || "";
  const words = labels.problem || {};
  const icons = labels.icons || {};
  const chips = p.problems.length ? p.problems : ["ok"];
  slot("chips").replaceChildren(...chips.map((code) => el("span", { class: `problem-chip problem-${code}` },
    el("span", { "aria-hidden": "true", text: icons[code] || "" }), ` ${words[code] || code}`)));
  const channels = [];
  if (p.confirmed_at) channels.push(el("span", { class: "confirmed-mark", text: fmt(texts.confirmed_at, { time: when(p.confirmed_at) }) }));
  for (const [channel, state] of Object.entries(p.channels).sort()) {
    channels.push(el("span", { class: `channel-state state-${state}`,
      text: `${(labels.channel || {})[channel] || channel}: ${(labels.delivery || {})[state] || state}` }));
  }
  slot("channels").replaceChildren(...channels);
  return row;
}

function render(report) {
  const counts = report.counts;
  for (const node of document.querySelectorAll("[data-count]")) {
    const code = node.dataset.count;
    node.textContent = code === "" ? counts.total - counts.ok : counts[code] ?? 0;
  }
  document.getElementById("count-confirmed").textContent = counts.confirmed;
  document.getElementById("count-total").textContent = counts.total;
  const matched = document.getElementById("people-matched");
  if (matched) matched.textContent = `(${fmt(texts.matched, { n: report.matched })})`;
  const state = document.getElementById("check-state");
  state.textContent = report.check.running ? texts.running : texts.finished;
  state.className = `check-state ${report.check.running ? "check-running" : "check-done"}`;
  if (list && rowTemplate) {
    list.replaceChildren(...(report.people.length ? report.people.map(personRow)
      : [el("li", { class: "empty", text: texts.nobody })]));
  }
}

let timer = null;
async function refresh() {
  const params = new URLSearchParams(data.query || "");
  params.delete("check");
  try {
    const report = await api(`safety/checks/${data.check.id}/?${params}`);
    render(report);
    if (report.check.running) timer = setTimeout(refresh, POLL_MS);
    else if (start) {  // the next check may start now
      start.disabled = false;
      document.getElementById("check-start-hint")?.remove();
    }
  } catch {
    timer = setTimeout(refresh, POLL_MS * 3);  // the server is away: try again later, quietly
  }
}

function follow() {
  clearTimeout(timer);
  timer = setTimeout(refresh, 500);
}

if (data.check?.running) follow();
