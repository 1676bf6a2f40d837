// The answer page, from the signed link (no sign-in) or in the app. One tap on a safety button sends the answer
// at once; the other questions and the comment go with "Send". Location is asked for only when the incident
// collects it, and only taken when the person taps "Share my location". Answers go to the REST API as JSON
// (#answer-data says where, how and the texts, translated by the server); without JavaScript the same page is a
// plain form that posts back to the page.
//
// The incident's instructions (対策指示) are rendered by the server, newest first. In the app they follow the
// organisation stream: on `safety.instruction` for this incident the page fetches the request again (after a
// random 0–2 s, so every phone of the company does not ask in the same instant) and adds the new ones on top,
// marked "new". The link page has no socket: it asks the link's GET every 60 s while it is visible.
//
// Offline: every answer carries a client_key made for it, so the server stores it once however often it is
// sent. When the post cannot reach the server (no connection, 5xx, 408, 429) the answer goes into the outbox
// (outbox.js, loaded by the base template) with the signed link API (#answer[data-outbox]: the page's own
// API on the link page, the person's link API in the app), and the page says "will be sent when you are back
// online"; when a flush sends it (this page's, another page's or the service worker's) the page says "sent"
// and shows the answer as the server has it. An answer made while an earlier one waits goes behind it.
import { onEvent } from "./app.js";

const root = document.getElementById("answer");
const D = readJson("answer-data");
const T = D.texts || {};
const form = document.getElementById("answer-form");
const alertBox = document.getElementById("answer-alert");
const sentBox = document.getElementById("answer-sent");
const currentBox = document.getElementById("answer-current");
const sendState = document.getElementById("send-state");
const queuedBox = document.getElementById("answer-queued");
const Outbox = window.TsunaguOutbox;
const QUEUE_URL = root?.dataset.outbox || "";  // where a queued answer goes (a signed link API), "" = never queue
const pending = new Set();      // this page's answers waiting in the outbox (their client keys)
const settled = new Set();      // outbox answers already sent or refused
let queuedValues = null;        // the latest answer waiting in the outbox, shown as chosen meanwhile
const lang = document.documentElement.lang || "ja";
let state = D.request;          // the request as the API last answered it
let position = null;            // {latitude, longitude, accuracy} once the person chose to share it
let lastClicked = null;         // the submit button, for browsers without SubmitEvent.submitter
let busy = false;
const instructionSection = document.getElementById("instructions");
const instructionList = document.getElementById("instruction-list");
const instructionsSeen = new Set((D.request?.instructions || []).map((i) => i.id));
let instructionsLoaded = Date.now();

function readJson(id) {
  const node = document.getElementById(id);
  try { return node ? JSON.parse(node.textContent) : {}; } catch { return {}; }
}

// "%(time)s" with {time: "10:02"} → "10:02"
function fmt(template, values = {}) {
  return String(template ?? "").replace(/%\((\w+)\)[sd]/g, (_, key) => String(values[key] ?? ""));
}

function when(iso) {
  const d = new Date(iso);
  const time = d.toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  return d.toDateString() === new Date().toDateString() ? time : `${d.toLocaleDateString(lang)} ${time}`;
}

function csrfToken() {
  const m = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

function safetyQuestion() {
  return state.questions.find((q) => q.key === "safety" && q.kind === "single");
}

// The current answer in words: "You answered 無事 at 10:02. You can change it." (or without the word, for a
// form without the safety question).
function answerText(answer) {
  const choice = safetyQuestion()?.choices.find((c) => c.key === answer.values.safety);
  const time = when(answer.created_at);
  return choice ? fmt(T.current, { answer: choice.label, time }) : fmt(T.current_plain, { time });
}

function showAlert(message) {
  alertBox.textContent = message;
  alertBox.hidden = !message;
  if (message) sentBox.hidden = true;
}

function showSendState(message, kind) {
  if (!sendState) return;
  sendState.textContent = message;
  sendState.className = `answer-send-state${kind ? ` is-${kind}` : ""}`;
}

function errorText(err) {
  if (!err || !err.status) return T.network;
  return err.body?.message || fmt(T.failed, { message: err.message });
}

// --- Showing the request as the server has it ------------------------------------------------------------
function render() {
  if (!form) return;  // answers are closed: the page shows the last answer as the server rendered it
  const answer = state.answer;
  // An answer waiting in the outbox shows as chosen until the server has it.
  const current = queuedValues?.safety || answer?.values?.safety || "";
  for (const button of form.querySelectorAll('button[name="safety"]')) {
    button.setAttribute("aria-pressed", String(button.value === current));
  }
  if (form.elements.safety_current) form.elements.safety_current.value = answer?.values?.safety || "";
  if (answer && currentBox) {
    const status = D.icons[answer.status] ? answer.status : "answered";
    const icon = document.createElement("span");
    icon.className = `answer-status-icon answer-status-${status}`;
    icon.setAttribute("aria-hidden", "true");
    icon.textContent = D.icons[status];
    const text = document.createElement("span");
    text.textContent = answerText(answer);
    currentBox.replaceChildren(icon, text);
    currentBox.hidden = false;
  }
}

// --- Instructions (対策指示) ------------------------------------------------------------------------------
function instructionItem(instruction) {
  const li = document.createElement("li");
  li.className = "instruction";
  li.dataset.instruction = instruction.id;
  const meta = document.createElement("p");
  meta.className = "instruction-meta";
  if (state.incident.is_drill) {
    const drill = document.createElement("span");
    drill.className = "instruction-drill";
    drill.textContent = T.instruction_drill;
    meta.append(drill);
  }
  const time = document.createElement("time");
  time.dateTime = instruction.created_at;
  time.textContent = when(instruction.created_at);
  meta.append(time);
  if (instruction.author) {
    const author = document.createElement("span");
    author.className = "instruction-author";
    author.textContent = fmt(T.instruction_by, { author: instruction.author });
    meta.append(author);
  }
  const body = document.createElement("p");
  body.className = "instruction-body";
  body.textContent = instruction.body;
  li.append(meta, body);
  return li;
}

// Show the list as the server has it (newest first): items already on the page stay as they are (so a screen
// reader announces only the additions), new ones are built and marked "new".
function renderInstructions(instructions) {
  if (!instructionList || !Array.isArray(instructions)) return;
  instructionsLoaded = Date.now();
  const present = new Map([...instructionList.querySelectorAll("li[data-instruction]")].map((li) => [Number(li.dataset.instruction), li]));
  const nodes = instructions.map((instruction) => {
    const known = present.get(instruction.id);
    if (known) return known;
    const li = instructionItem(instruction);
    if (!instructionsSeen.has(instruction.id)) {
      li.classList.add("is-new");
      const mark = document.createElement("span");
      mark.className = "instruction-new";
      mark.textContent = T.instruction_new;
      li.querySelector(".instruction-meta").prepend(mark);
      instructionsSeen.add(instruction.id);
    }
    return li;
  });
  // Only insert and move: removing and re-adding the ones already there would announce them again.
  let before = instructionList.firstChild;
  for (const node of nodes) {
    if (node === before) { before = node.nextSibling; continue; }
    instructionList.insertBefore(node, before);
  }
  const keep = new Set(nodes);
  for (const li of present.values()) if (!keep.has(li)) li.remove();
  instructionSection.hidden = nodes.length === 0;
}

// The request again from the server (the app's own API, or the link's GET): the answer given elsewhere and
// the instructions. An answer being sent from this page wins over what this read says about the answer.
async function refresh() {
  try {
    const response = await fetch(D.endpoint, { credentials: D.csrf ? "same-origin" : "omit" });
    if (!response.ok) return;
    const json = await response.json();
    renderInstructions(json.instructions);
    // Answers closed meanwhile: the page shows that (and the last answer) only as rendered by the server.
    if (form && json.incident && !json.incident.is_open) { location.reload(); return; }
    if (!busy) { state = { ...json }; delete state.instructions; render(); }
  } catch { /* the next event, poll or a reload shows it */ }
}

function refreshSoon() {
  setTimeout(refresh, Math.random() * 2000);
}

// --- Sending --------------------------------------------------------------------------------------------
function values(submitter) {
  const data = new FormData(form);
  const out = {};
  for (const q of state.questions) {
    if (q.kind === "multiple") {
      const picked = data.getAll(q.key);
      if (picked.length) out[q.key] = picked;
    } else {
      const value = data.get(q.key);
      if (typeof value === "string" && value.trim()) out[q.key] = value;
    }
  }
  // The safety buttons are the form's submit buttons: the one tapped, else the answer already given (or
  // waiting to be sent).
  if (submitter && submitter.name === "safety") out.safety = submitter.value;
  else if (queuedValues?.safety) out.safety = queuedValues.safety;
  else if (state.answer?.values?.safety) out.safety = state.answer.values.safety;
  return out;
}

function setBusy(on, submitter) {
  busy = on;
  for (const button of form.querySelectorAll('button[type="submit"]')) button.disabled = on;
  if (submitter) submitter.setAttribute("aria-busy", String(on));
  if (on && submitter && submitter.name === "safety") {
    // Show the tap at once; the server's answer confirms it (or the old answer comes back on an error).
    for (const button of form.querySelectorAll('button[name="safety"]')) {
      button.setAttribute("aria-pressed", String(button === submitter));
    }
  }
}

// --- The outbox (answers made without a connection) ----------------------------------------------------
function newKey() {
  if (Outbox) return Outbox.uuid();
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

function retryable(status) {
  return !status || status >= 500 || status === 408 || status === 429;
}

function showQueued(on) {
  if (!queuedBox) return;
  queuedBox.hidden = !on;
  if (on) { showAlert(""); sentBox.hidden = true; }
}

// Keep the answer to send it later; false when it cannot be kept (no outbox, no storage).
async function enqueue(body, submitter) {
  if (!Outbox || !QUEUE_URL) return false;
  const choice = safetyQuestion()?.choices.find((c) => c.key === body.values.safety);
  const now = new Date();
  try {
    await Outbox.add({
      id: body.client_key,
      url: QUEUE_URL,
      body,
      label: choice ? choice.label : "",
      incident: state.incident.id,
      created_at: now.toISOString(),
      tries: 0,
      // Sent by the service worker after this page was closed: it says so in a notification.
      notify: {
        title: state.incident.title,
        tag: `incident-${state.incident.id}`,
        url: location.pathname + location.search,
        done: fmt(queuedBox?.dataset.sent, { time: when(now) }),
      },
    });
  } catch {
    return false;
  }
  pending.add(body.client_key);
  queuedValues = body.values;
  showQueued(true);
  render();
  showSendState(submitter?.name === "safety" ? "" : queuedBox?.textContent.trim() || "", "");
  Outbox.sync();  // Background Sync: the service worker sends it when the connection is back, page open or not
  return true;
}

// A flush (here, in another page or in the service worker) sent an answer, or the server refused it.
function outboxResult(result) {
  if (result.url !== QUEUE_URL || settled.has(result.id)) return;
  settled.add(result.id);
  pending.delete(result.id);
  if (result.ok && result.json && Array.isArray(result.json.questions) && !busy) {
    state = result.json;
    render();
  }
  if (pending.size) return;
  queuedValues = null;
  showQueued(false);
  if (result.ok) {
    sentBox.textContent = fmt(queuedBox?.dataset.sent, { time: when(result.created_at) });
    sentBox.hidden = false;
    showSendState("", "");
  } else {
    render();
    const message = result.json?.message || fmt(T.failed, { message: result.status });
    showAlert(message);
    showSendState(message, "error");
  }
  if (result.json?.incident && !result.json.incident.is_open) location.reload();
}

// --- Sending --------------------------------------------------------------------------------------------
async function submit(submitter) {
  if (busy) return;
  // One key per answer: if it reaches the server but the reply is lost, sending it again stores nothing new.
  const body = { values: values(submitter), via: D.via, client_key: newKey() };
  if (position) body.location = position;
  setBusy(true, submitter);
  showAlert("");
  sentBox.hidden = true;
  showSendState(submitter?.name === "safety" ? "" : T.sending);
  try {
    // An earlier answer still waits: this one goes behind it, or the earlier one would arrive last and win.
    if (pending.size && (await enqueue(body, submitter))) {
      Outbox.flush();
      return;
    }
    const headers = { "Content-Type": "application/json" };
    if (D.csrf) headers["X-CSRFToken"] = csrfToken();
    let response = null;
    try {
      response = await fetch(D.endpoint, {
        method: "POST",
        // The signed link is the credential; no cookie of whoever is signed in on this browser goes with it.
        credentials: D.csrf ? "same-origin" : "omit",
        headers,
        body: JSON.stringify(body),
      });
    } catch { /* no connection */ }
    if ((!response || retryable(response.status)) && (await enqueue(body, submitter))) return;
    if (!response) throw new Error("network");
    const json = await response.json().catch(() => ({}));
    if (!response.ok) throw Object.assign(new Error(json.message || response.statusText), { status: response.status, body: json });
    state = json;
    render();
    const sent = fmt(T.sent, { time: when(state.answer.created_at) });
    sentBox.textContent = sent;
    sentBox.hidden = false;
    // "Send" is at the bottom of a long form: say it there too. A safety button is next to the box above.
    showSendState(submitter?.name === "safety" ? "" : sent, "ok");
    if (body.location) locationState(fmt(T.location_sent, { m: Math.round(body.location.accuracy ?? 0) }), "ok");
    if (!state.incident.is_open) location.reload();
  } catch (err) {
    render();
    const message = errorText(err);
    showAlert(message);
    showSendState(message, "error");
    alertBox.scrollIntoView({ block: "nearest" });
  } finally {
    setBusy(false, submitter);
  }
}

// --- Location (only when the incident asks, only on the person's tap) ------------------------------------
const locationBox = document.getElementById("location");
const locationText = document.getElementById("location-state");

function locationState(message, kind) {
  if (!locationText) return;
  locationText.textContent = message;
  locationText.className = kind ? `is-${kind}` : "hint";
}

function shareLocation() {
  if (!("geolocation" in navigator)) { locationState(T.location_unsupported, "warn"); return; }
  locationState(T.locating);
  navigator.geolocation.getCurrentPosition(
    (found) => {
      const { latitude, longitude, accuracy } = found.coords;
      position = { latitude, longitude, accuracy: Math.round(accuracy) };
      // Already answered: send the answer again with the position, so the tap is all it takes.
      if (state.answer) submit(null);
      else locationState(fmt(T.location_ready, { m: position.accuracy }), "ok");
    },
    (err) => {
      position = null;
      locationState(err.code === 1 ? T.location_denied : fmt(T.location_failed, { reason: err.message || err.code }), "warn");
    },
    { enableHighAccuracy: true, timeout: 20000, maximumAge: 60000 },
  );
}

// --- Wiring -----------------------------------------------------------------------------------------------
if (form && state) {
  form.addEventListener("click", (e) => {
    const button = e.target.closest('button[type="submit"]');
    if (button) lastClicked = button;
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    submit(e.submitter || lastClicked);
    lastClicked = null;
  });
  if (locationBox) {
    locationBox.hidden = false;
    document.getElementById("location-share").addEventListener("click", shareLocation);
  }
  // In the app, an answer given on another device (or by a manager, by proxy) shows here too.
  if (root.dataset.mode === "app") {
    onEvent("safety.answered", (frame) => {
      if (frame.data?.incident_id !== state.incident.id || busy) return;
      if (state.answer && frame.data.answered_at === state.answer.created_at) return;
      refresh();
    });
  }
}

if (form && state && Outbox && QUEUE_URL) {
  Outbox.onResult(outboxResult);
  // Answers from an earlier visit still waiting: say so (the base template's flush on start sends them).
  Outbox.list().then((items) => {
    const mine = items.filter((i) => i.url === QUEUE_URL && !settled.has(i.id));
    if (!mine.length) return;
    for (const item of mine) pending.add(item.id);
    queuedValues = mine[mine.length - 1].body?.values || null;
    showQueued(true);
    render();
  }).catch(() => { /* no IndexedDB: nothing was queued */ });
}

if (state) {
  if (root.dataset.mode === "app") {
    onEvent("safety.instruction", (frame) => {
      if (Number(frame.data?.incident_id) === state.incident.id && !instructionsSeen.has(frame.data.id)) refreshSoon();
    });
    // A snapshot after the first means the socket was away and events may have been missed: ask again.
    let snapshots = 0;
    onEvent("snapshot:org", () => { if (snapshots++ > 0) refreshSoon(); });
  } else if (state.incident.is_open) {
    // The link page: no socket, so look every minute while someone can see it, and at once on coming back.
    setInterval(() => { if (document.visibilityState === "visible") refresh(); }, 60000);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && Date.now() - instructionsLoaded > 60000) refresh();
    });
  }
  root.dataset.ready = "1";
}
