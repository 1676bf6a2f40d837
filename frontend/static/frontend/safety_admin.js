// Safety confirmation for administrators: the incident list, the registration form (templates, the question
// builder, administrators to notify), one incident (send with a live "reaches N people" preview, sends and
// deliveries, the tally per department, the result list with filters, answer history and proxy answers,
// completion) and the templates page. The first screen comes with the page (#safety-data, in the REST API's
// shapes); writes go to the safety REST API; the incident page refreshes when a `safety.incident` event for it
// arrives on the organisation's stream (app.js `Live`) and every few seconds while answers are open.
// Texts come translated (#safety-texts): the script carries no language of its own.
import { api, onEvent } from "./app.js";

const org = document.body.dataset.org;
const D = readJson("safety-data");
const T = readJson("safety-texts");
const L = D.labels || {};
const lang = document.documentElement.lang || "ja";
const TZ = D.timezone || "Asia/Tokyo";

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

const $ = (id) => document.getElementById(id);

function errorText(err) {
  if (!err || !err.status) return T.network;
  return err.body?.message || err.message || T.network;
}

function show(node, text) {
  if (!node) return;
  node.textContent = text || "";
  node.hidden = !text;
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

function when(iso, { year = false } = {}) {
  if (!iso) return "";
  const options = { timeZone: TZ, month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit" };
  if (year) options.year = "numeric";
  return new Date(iso).toLocaleString(lang, options);
}

function timeEl(iso, opts) {
  return el("time", { datetime: iso, text: when(iso, opts) });
}

function statusPill(status, label) {
  const key = status || "none";
  return el("span", { class: `st st-${key}`, text: label || L.answer?.[key] || key });
}

function incidentPill(status, label) {
  return el("span", { class: `inc-status inc-${status}`, text: label || L.incident?.[status] || status });
}

function helpFlag() {
  return el("span", { class: "help-flag", text: T.needs_help || L.answer_filter?.needs_help });
}

function rateBar(rate, extra = "") {
  const pct = Math.round((rate || 0) * 1000) / 10;
  return el("span", { class: `bar ${extra}`, role: "img", "aria-label": fmt(T.rate, { rate: pct }) },
    el("span", { style: `width:${Math.min(100, pct)}%` }));
}

function people(n) {
  return fmt(n === 1 ? T.people_one : T.people, { n });
}

function pct(rate) {
  return Math.round((rate || 0) * 1000) / 10;
}

// A search box that asks `load(query)` for rows as the person types, and draws them with `row(item)`.
function searchBox({ input, list, status, load, row, minLength = 0, empty = T.nobody }) {
  let seq = 0;
  const run = async () => {
    const q = input.value.trim();
    const mine = ++seq;
    if (q.length < minLength) { list.replaceChildren(); show(status, ""); return; }
    status.textContent = T.searching;
    try {
      const items = await load(q);
      if (mine !== seq) return;
      list.replaceChildren(...items.map(row));
      status.textContent = items.length ? "" : (empty || "");
    } catch (err) {
      if (mine !== seq) return;
      status.textContent = err?.status ? fmt(T.failed, { message: errorText(err) }) : T.search_failed;
    }
  };
  input.addEventListener("input", debounce(run, 250));
  return run;
}

function closeOnBackdrop(dialog) {
  dialog.addEventListener("click", (e) => {
    if (e.target.closest("[data-close]")) { dialog.close(); return; }
    if (e.target === dialog) {
      const box = dialog.getBoundingClientRect();
      const inside = e.clientX >= box.left && e.clientX <= box.right && e.clientY >= box.top && e.clientY <= box.bottom;
      if (!inside) dialog.close();
    }
  });
}

// --- The incident list -----------------------------------------------------------------------------------

function incidentItem(i) {
  const meta = el("span", { class: "incident-meta" });
  if (i.recipients) {
    meta.append(el("span", { text: fmt(T.answered_of, { answered: i.answered, total: i.recipients }) }),
      rateBar(i.recipients ? i.answered / i.recipients : 0));
  } else {
    meta.append(el("span", { text: T.not_sent }));
  }
  meta.append(el("span", { text: fmt(T.created, { when: when(i.created_at, { year: true }) }) }));
  // The live board: for every incident that was opened, and the thing to click while it is open.
  const boardLabel = $("incident-list")?.dataset.boardLabel;
  const hasBoard = i.status !== "draft" && boardLabel && i.board_url;
  const open = i.status === "accepting" || i.status === "sending";
  return el("li", { class: `incident-item${hasBoard ? " has-board" : ""}`, "data-id": i.id },
    el("a", { class: "incident-link", href: i.url },
      el("span", { class: "incident-line" },
        incidentPill(i.status, i.status_label),
        i.is_drill ? el("span", { class: "drill-tag", text: T.drill }) : null,
        i.automatic ? el("span", { class: "auto-tag", title: T.automatic_title, text: T.automatic }) : null,
        el("strong", { class: "incident-title", text: i.title })),
      meta),
    hasBoard ? el("a", { class: `button board-link${open ? " primary" : ""}`, href: i.board_url },
      el("span", { class: "live-dot", "aria-hidden": "true" }), "\u00a0", boardLabel,
      el("span", { class: "sr-only", text: `: ${i.title}` })) : null);
}

function initList() {
  const list = $("incident-list");
  const render = (rows) => {
    if (!rows.length) list.replaceChildren(el("li", { class: "empty", id: "incidents-empty", text: T.none }));
    else list.replaceChildren(...rows.map(incidentItem));
  };
  render(D.incidents || []);
  const reload = debounce(async () => {
    try { render(await api("safety/incidents/")); } catch { /* the next event or a reload tries again */ }
  }, 400);
  onEvent("safety.incident", reload);
  if ($("escalation-form")) initEscalation();
}

// The escalation setting (safety.escalation): minutes after a send until an unanswered person is sent it again
// on every channel; 0 is off. Saved through the automatic-dispatch settings API.
function initEscalation() {
  const form = $("escalation-form");
  const input = $("escalation-minutes");
  const max = D.escalation?.max || 1440;
  const stateText = (n) => (n ? fmt(T.escalation_on, { n }) : T.escalation_off);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    show($("escalation-status"), "");
    show($("escalation-error"), "");
    const raw = input.value.trim();
    const n = /^\d{1,5}$/.test(raw) ? Number(raw) : NaN;
    if (!Number.isInteger(n) || n < 0 || n > max) {
      input.setAttribute("aria-invalid", "true");
      show($("escalation-error"), fmt(T.escalation_bad, { max }));
      input.focus();
      return;
    }
    input.removeAttribute("aria-invalid");
    const save = $("escalation-save");
    save.disabled = true;
    try {
      const saved = await api("safety/auto/settings/", { method: "PATCH", data: { escalate_after_minutes: n } });
      const minutes = saved.escalate_after_minutes;
      input.value = String(minutes);
      $("escalation-state").textContent = stateText(minutes);
      show($("escalation-status"), minutes ? fmt(T.escalation_saved, { n: minutes }) : T.escalation_saved_off);
    } catch (err) {
      show($("escalation-error"), fmt(T.failed, { message: errorText(err) }));
    } finally {
      save.disabled = false;
    }
  });
}

// --- The registration form ---------------------------------------------------------------------------------

const FIXED = new Set(["safety", "help"]);
const FIELD_OF_CODE = {
  bad_title: "title", bad_message: "message", bad_tally_start: "start", bad_end_notice: "end", bad_address: "end",
  end_notice_sent: "end", bad_questions: "questions", questions_locked: "questions", bad_notify: "notify",
};
const FIELD_OF_INPUT = {
  title: "title", message: "message", tally_start_at: "start", end_notice_at: "end", end_notice_addresses: "end",
  questions: "questions", notify_user_ids: "notify",
};

function initForm() {
  const form = $("incident-form");
  const incident = D.incident;
  const locked = !!D.questions_locked;
  const clone = (x) => JSON.parse(JSON.stringify(x));
  let questions = clone(incident ? (incident.questions.length ? incident.questions : D.default_questions) : D.default_questions);
  const chosen = new Map((D.notify || []).map((p) => [p.id, p]));
  const title = $("f-title");
  const message = $("f-message");
  const list = $("questions");
  const section = $("questions-section");

  // Character counters
  for (const [input, max] of [[title, D.limits.title], [message, D.limits.message]]) {
    const counter = $(`${input.id}-count`);
    const update = () => {
      counter.textContent = fmt(T.chars, { n: input.value.length, max });
      counter.classList.toggle("over", input.value.length > max);
    };
    input.addEventListener("input", update);
    update();
  }

  // The end notice
  const endOn = $("f-end-on");
  const endFields = $("end-fields");
  if (incident?.end_notice) {
    $("f-end-date").value = incident.end_notice.date;
    $("f-end-time").value = incident.end_notice.time;
  }
  $("f-end-addresses").value = (incident?.end_notice_addresses || []).join("\n");
  endOn.addEventListener("change", () => {
    endFields.hidden = !endOn.checked;
    if (endOn.checked && !$("f-end-date").value) {
      $("f-end-date").value = $("f-start-date").value;
      $("f-end-time").value = $("f-start-time").value;
    }
  });

  // --- Questions
  const usedKeys = () => new Set(questions.map((q) => q.key));
  const newKey = (prefix, used) => { let n = 1; while (used.has(`${prefix}${n}`)) n += 1; return `${prefix}${n}`; };
  const modeNone = $("q-none");
  const syncMode = () => section.classList.toggle("questions-off", modeNone.checked);
  form.querySelectorAll('input[name="qmode"]').forEach((r) => r.addEventListener("change", () => {
    syncMode();
    const hint = $("questions-none-hint");
    if (hint) hint.hidden = !modeNone.checked;
  }));
  section.insertBefore(el("p", { class: "hint", id: "questions-none-hint", hidden: !modeNone.checked, text: T.no_questions_hint }), list);
  syncMode();

  function choiceRow(q, c, ci) {
    const n = ci + 1;
    return el("li", { class: "choice-row" },
      el("div", { class: "pair" },
        el("label", { class: "sub" }, el("span", { text: fmt(T.choice_ja, { n }) }),
          el("input", { value: c.label || "", maxlength: 100, disabled: locked, "data-field": "choice-label",
            oninput: (e) => { c.label = e.target.value; } })),
        el("label", { class: "sub" }, el("span", { text: fmt(T.choice_en, { n }) }),
          el("input", { value: c.label_en || "", maxlength: 100, lang: "en", disabled: locked,
            oninput: (e) => { c.label_en = e.target.value; } }))),
      el("button", { type: "button", "aria-label": `${T.remove_choice} (${n})`, title: T.remove_choice, disabled: locked || q.choices.length <= 2,
        onclick: () => { q.choices.splice(ci, 1); renderQuestions({ focus: [questions.indexOf(q), "add-choice"] }); } }, "✕"));
  }

  function questionItem(q, qi) {
    const fixed = FIXED.has(q.key);
    const n = qi + 1;
    const headId = `q-${qi}-title`;
    const tools = el("div", { class: "tools" },
      el("button", { type: "button", title: T.move_up, "aria-label": `${T.move_up} (${fmt(T.question, { n })})`, disabled: locked || qi === 0, "data-act": "up",
        onclick: () => { [questions[qi - 1], questions[qi]] = [questions[qi], questions[qi - 1]]; renderQuestions({ focus: [qi - 1, "up"] }); } }, "↑"),
      el("button", { type: "button", title: T.move_down, "aria-label": `${T.move_down} (${fmt(T.question, { n })})`, disabled: locked || qi === questions.length - 1, "data-act": "down",
        onclick: () => { [questions[qi + 1], questions[qi]] = [questions[qi], questions[qi + 1]]; renderQuestions({ focus: [qi + 1, "down"] }); } }, "↓"),
      el("button", { type: "button", class: "danger", title: T.remove_question, "aria-label": `${T.remove_question} (${fmt(T.question, { n })})`, disabled: locked,
        onclick: () => { questions.splice(qi, 1); renderQuestions({ focus: [Math.min(qi, questions.length - 1), "label"] }); } }, "✕"));
    const kindName = { single: T.kind_single, multiple: T.kind_multiple, text: T.kind_text }[q.kind];
    const body = el("div", { class: "question-body" });
    if (fixed) {
      body.append(
        el("p", { class: "q-label" }, el("strong", { text: q.label }), " ", el("span", { class: "hint", lang: "en", text: q.label_en || "" })),
        el("ul", { class: "fixed-choices" }, q.choices.map((c) => el("li", { text: c.label }))),
        el("p", { class: "hint", text: T.fixed_choices }));
    } else {
      body.append(el("div", { class: "question-row" },
        el("label", { class: "sub" }, el("span", { text: T.question_ja }),
          el("input", { value: q.label || "", maxlength: 200, disabled: locked, "data-field": "label", oninput: (e) => { q.label = e.target.value; } })),
        el("label", { class: "sub" }, el("span", { text: T.question_en }),
          el("input", { value: q.label_en || "", maxlength: 200, lang: "en", disabled: locked, oninput: (e) => { q.label_en = e.target.value; } }))));
      const kind = el("select", { disabled: locked, "data-field": "kind", onchange: (e) => {
        q.kind = e.target.value;
        if (q.kind === "text") q.choices = [];
        else if (q.choices.length < 2) q.choices = [{ key: "c1", label: "", label_en: "" }, { key: "c2", label: "", label_en: "" }];
        renderQuestions({ focus: [qi, "kind"] });
      } }, ["single", "multiple", "text"].map((k) => el("option", { value: k, selected: q.kind === k, text: { single: T.kind_single, multiple: T.kind_multiple, text: T.kind_text }[k] })));
      body.append(el("div", { class: "question-row kind-row" },
        el("label", { class: "sub" }, el("span", { text: T.kind }), kind),
        el("label", { class: "check" }, el("input", { type: "checkbox", checked: !!q.required, disabled: locked, onchange: (e) => { q.required = e.target.checked; } }), " ", T.required)));
      if (q.kind !== "text") {
        body.append(el("ol", { class: "choices" }, q.choices.map((c, ci) => choiceRow(q, c, ci))),
          el("button", { type: "button", disabled: locked || q.choices.length >= 20, "data-act": "add-choice", onclick: () => {
            q.choices.push({ key: newKey("c", new Set(q.choices.map((c) => c.key))), label: "", label_en: "" });
            renderQuestions({ focus: [qi, "last-choice"] });
          } }, `＋ ${T.add_choice}`));
      }
    }
    if (fixed) {
      body.append(el("label", { class: "check" }, el("input", { type: "checkbox", checked: !!q.required, disabled: locked, onchange: (e) => { q.required = e.target.checked; } }), " ", T.required));
    }
    return el("li", { class: "question", "data-key": q.key, "aria-labelledby": headId },
      el("div", { class: "question-head" },
        el("h3", { id: headId }, fmt(T.question, { n }), " ", el("span", { class: "hint", text: `· ${kindName}` })),
        tools),
      body);
  }

  function renderQuestions({ focus } = {}) {
    list.replaceChildren(...questions.map(questionItem));
    if (!focus) return;
    const [qi, what] = focus;
    const item = list.children[qi];
    if (!item) { form.querySelector('#question-add button')?.focus(); return; }
    const target = {
      label: item.querySelector('[data-field="label"]') || item.querySelector("button"),
      kind: item.querySelector('[data-field="kind"]'),
      "add-choice": item.querySelector('[data-act="add-choice"]'),
      "last-choice": [...item.querySelectorAll('[data-field="choice-label"]')].pop(),
      up: item.querySelector('[data-act="up"]:not(:disabled)') || item.querySelector('[data-act="down"]'),
      down: item.querySelector('[data-act="down"]:not(:disabled)') || item.querySelector('[data-act="up"]'),
    }[what];
    (target || item.querySelector("input, button"))?.focus();
  }
  renderQuestions();

  $("question-add").addEventListener("click", (e) => {
    const kind = e.target.closest("[data-add]")?.dataset.add;
    if (!kind || locked) return;
    const q = { key: newKey("q", usedKeys()), kind, label: "", label_en: "", required: false, choices: [] };
    if (kind !== "text") q.choices = [{ key: "c1", label: "", label_en: "" }, { key: "c2", label: "", label_en: "" }];
    questions.push(q);
    renderQuestions({ focus: [questions.length - 1, "label"] });
  });
  $("questions-reset").addEventListener("click", () => {
    if (locked || !confirm(T.confirm_reset)) return;
    questions = clone(D.default_questions);
    $("q-ask").checked = true;
    syncMode();
    $("questions-none-hint").hidden = true;
    renderQuestions({ focus: [0, "label"] });
  });
  if (locked) {
    form.querySelectorAll('input[name="qmode"], #question-add button').forEach((b) => { b.disabled = true; });
  }

  // --- Administrators to notify
  const chips = $("notify-chosen");
  const renderChosen = () => {
    chips.replaceChildren(...[...chosen.values()].map((p) => el("li", { class: "chip" },
      el("span", { text: p.department ? `${p.name}（${p.department}）` : p.name }),
      el("button", { type: "button", "aria-label": `${T.remove}: ${p.name}`, title: T.remove, onclick: () => {
        chosen.delete(p.id); renderChosen(); refreshFound();
      } }, "✕"))));
  };
  renderChosen();
  const notifyRow = (p) => el("li", {},
    el("span", { class: "who" }, el("strong", { text: p.name }), el("span", { class: "sub-line", text: p.department || p.login_id })),
    el("button", { type: "button", disabled: chosen.has(p.id), "aria-label": `${T.add}: ${p.name}`, onclick: (e) => {
      chosen.set(p.id, p); renderChosen(); e.target.disabled = true;
    } }, T.add));
  const refreshFound = searchBox({
    input: $("notify-q"), list: $("notify-found"), status: $("notify-status"), minLength: 1,
    load: (q) => api(`safety/people/?admins=1&q=${encodeURIComponent(q)}`), row: notifyRow,
  });

  // --- Templates
  const dialog = $("template-dialog");
  closeOnBackdrop(dialog);
  const inserted = el("p", { class: "ok", role: "status", hidden: true });
  title.closest(".card").append(inserted);
  const useTemplate = (t) => {
    if (t.title) title.value = t.title.slice(0, D.limits.title);
    if (t.body) {
      if (!message.value.trim()) message.value = t.body;
      else {
        const at = message.selectionStart ?? message.value.length;
        const before = message.value.slice(0, at);
        const glue = before && !before.endsWith("\n") ? "\n" : "";
        message.value = (before + glue + t.body + message.value.slice(at)).slice(0, D.limits.message);
      }
    }
    title.dispatchEvent(new Event("input"));
    message.dispatchEvent(new Event("input"));
    dialog.close();
    show(inserted, fmt(T.template_inserted, { name: t.name }));
    title.focus();
  };
  const templateRow = (t) => el("li", {},
    el("button", { type: "button", class: "pick-template", onclick: () => useTemplate(t) },
      el("strong", { text: t.name }),
      t.title ? el("span", { class: "sub-line", text: t.title }) : null,
      t.body ? el("span", { class: "sub-line", text: t.body.length > 80 ? `${t.body.slice(0, 80)}…` : t.body }) : null));
  const searchTemplates = searchBox({
    input: $("template-q"), list: $("template-found"), status: $("template-status"),
    load: (q) => api(`safety/templates/?q=${encodeURIComponent(q)}`), row: templateRow, empty: T.no_templates,
  });
  $("template-open").addEventListener("click", () => {
    dialog.showModal();
    $("template-q").focus();
    searchTemplates();
  });

  // --- Saving
  const fieldInputs = {
    title: [title], message: [message], start: [$("f-start-date"), $("f-start-time")],
    end: [$("f-end-date"), $("f-end-time"), $("f-end-addresses")], questions: [], notify: [$("notify-q")],
  };
  const clearErrors = () => {
    show($("form-error"), "");
    for (const name of Object.keys(fieldInputs)) {
      show($(`err-${name}`), "");
      fieldInputs[name].forEach((i) => i.removeAttribute("aria-invalid"));
    }
  };
  const fieldError = (name, text) => {
    const node = $(`err-${name}`);
    show(node, text);
    fieldInputs[name]?.forEach((i) => { i.setAttribute("aria-invalid", "true"); if (node) i.setAttribute("aria-errormessage", node.id); });
  };
  const firstInvalid = () => form.querySelector('[aria-invalid="true"]') || form.querySelector(".field-error:not([hidden])");

  const addresses = () => $("f-end-addresses").value.split(/[\s,;、]+/).map((a) => a.trim()).filter(Boolean);
  const stamp = (date, time) => `${date}T${time}:00${D.utc_offset}`;
  const cleanQuestions = () => questions.map((q) => ({
    key: q.key, kind: q.kind, label: (q.label || "").trim(), label_en: (q.label_en || "").trim(), required: !!q.required,
    choices: q.kind === "text" ? [] : q.choices.map((c) => ({ key: c.key, label: (c.label || "").trim(), label_en: (c.label_en || "").trim() })),
  }));

  function payload() {
    const data = {
      title: title.value.trim(),
      message: message.value.trim(),
      tally_start_at: stamp($("f-start-date").value, $("f-start-time").value),
      end_notice_at: endOn.checked ? stamp($("f-end-date").value, $("f-end-time").value) : null,
      end_notice_addresses: endOn.checked ? addresses() : [],
      collect_location: $("f-location").checked,
      questions: modeNone.checked ? [] : cleanQuestions(),
      notify_user_ids: [...chosen.keys()].sort((a, b) => a - b),
    };
    if (!incident) return data;
    // A change sends only what changed: the questions are locked once people answer, and so is a sent end notice.
    const before = {
      title: incident.title, message: incident.message,
      tally_start_at: stamp(incident.tally_start.date, incident.tally_start.time),
      end_notice_at: incident.end_notice ? stamp(incident.end_notice.date, incident.end_notice.time) : null,
      end_notice_addresses: incident.end_notice_addresses, collect_location: incident.collect_location,
      questions: incident.questions, notify_user_ids: [...incident.notify_user_ids].sort((a, b) => a - b),
    };
    const changed = {};
    for (const [key, value] of Object.entries(data)) {
      if (JSON.stringify(value) !== JSON.stringify(before[key])) changed[key] = value;
    }
    if (locked) delete changed.questions;
    return changed;
  }

  function check() {
    if (!title.value.trim()) fieldError("title", T.need_title);
    if (!message.value.trim()) fieldError("message", T.need_message);
    if (!$("f-start-date").value || !$("f-start-time").value) fieldError("start", T.need_start);
    if (endOn.checked) {
      if (!$("f-end-date").value || !$("f-end-time").value) fieldError("end", T.need_end);
      else if (!addresses().length) fieldError("end", T.need_addresses);
    }
    return !firstInvalid();
  }

  const save = $("incident-save");
  const saveText = save.textContent;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors();
    if (!check()) {
      show($("form-error"), T.form_errors);
      firstInvalid()?.focus?.();
      return;
    }
    const data = payload();
    if (incident && !Object.keys(data).length) { location.href = incident.url; return; }
    save.disabled = true;
    save.textContent = T.saving;
    try {
      const saved = incident
        ? await api(`safety/incidents/${incident.id}/`, { method: "PATCH", data })
        : await api("safety/incidents/", { method: "POST", data });
      location.href = saved.url;
    } catch (err) {
      save.disabled = false;
      save.textContent = saveText;
      const body = err.body || {};
      let placed = false;
      if (body.fields) {
        for (const [name, messages] of Object.entries(body.fields)) {
          const field = FIELD_OF_INPUT[name];
          if (field) { fieldError(field, [].concat(messages).map((m) => (typeof m === "string" ? m : JSON.stringify(m))).join(" ")); placed = true; }
        }
      } else if (FIELD_OF_CODE[body.code]) {
        fieldError(FIELD_OF_CODE[body.code], body.message);
        placed = true;
      }
      show($("form-error"), placed ? T.form_errors : fmt(T.failed, { message: errorText(err) }));
      const target = $("form-error");
      target.focus();
      target.scrollIntoView({ block: "center" });
    }
  });
}

// --- One incident ------------------------------------------------------------------------------------------

function initDetail() {
  const root = $("incident-detail");
  const id = Number(root.dataset.id);
  let detail = D.incident;
  let results = D.results;
  const pageSize = D.page_size || 50;
  const filters = { department: "", answer: "", q: "" };
  let offset = 0;
  const base = `safety/incidents/${id}/`;
  const isOpen = () => detail.status === "accepting" || detail.status === "sending";
  let updatePreview = () => {};  // the send panel's preview (only for those who may send)
  let resendPreset = () => {};  // after the first send, the panel offers a resend to those who have not answered
  const query = (extra = {}) => {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries({ ...filters, ...extra })) if (v !== "" && v !== undefined) params.set(k, v);
    return params.toString();
  };

  // --- State, actions
  function renderState() {
    const status = $("incident-status");
    status.className = `inc-status inc-${detail.status}`;
    status.textContent = detail.status_label || L.incident?.[detail.status];
    $("incident-title").textContent = detail.title;
    $("incident-message").textContent = detail.message;
    const edit = $("edit-link");
    if (edit) edit.hidden = detail.status === "completed";
    const open = $("open-button");
    if (open) open.hidden = detail.status !== "draft";
    const complete = $("complete-button");
    if (complete) complete.hidden = !isOpen();
    $("board-link")?.classList.toggle("primary", isOpen());  // the live board is the place to be while open
    const panel = $("send-panel");
    if (panel) {
      panel.hidden = detail.status === "completed";
      $("send-title").textContent = detail.dispatches.length ? T.send_again : T.send;
    }
    $("csv-link").href = `/${org}/api/${base}results.csv${query() ? `?${query()}` : ""}`;
  }

  function renderOverall(o) {
    const box = $("overall");
    const counts = el("ul", { class: "overall-counts" },
      ["safe", "minor", "serious"].map((k) => el("li", {}, statusPill(k), el("b", { text: String(o.counts[k] || 0) }))),
      o.counts.answered ? el("li", {}, statusPill("answered"), el("b", { text: String(o.counts.answered) })) : null,
      el("li", {}, statusPill("none"), el("b", { text: String(o.counts.none || 0) })),
      el("li", {}, helpFlag(), el("b", { text: String(o.needs_help || 0) })));
    box.replaceChildren(
      el("p", { class: "overall-line" }, el("strong", { text: fmt(T.answered_of, { answered: o.answered, total: o.total }) }),
        " ", el("span", { class: "hint", text: `(${fmt(T.rate, { rate: pct(o.rate) })})` })),
      rateBar(o.rate, "overall-bar"),
      counts);
  }

  function targetSummary(t) {
    if (!t || t.mode === "everyone") return T.target_everyone;
    if (t.mode === "chosen") return fmt(T.target_chosen, { n: (t.person_ids || []).length });
    const parts = [];
    const depName = Object.fromEntries((D.send_departments.length ? D.send_departments : D.departments).map((d) => [d.id, d.name]));
    const prefName = Object.fromEntries(D.prefectures.map((p) => [p.code, p.name]));
    if (t.department_ids?.length) parts.push(fmt(T.target_departments, { list: t.department_ids.map((d) => depName[d] || d).join("、") }));
    if (t.regions?.length) parts.push(fmt(T.target_regions, { list: t.regions.map((r) => prefName[r] || r).join("、") }));
    if (t.roles?.length) parts.push(fmt(T.target_roles, { list: t.roles.map((r) => L.role?.[r] || r).join("、") }));
    if (t.answer) parts.push(fmt(T.target_answer, { value: L.answer_filter?.[t.answer] || t.answer }));
    return parts.length ? `${T.target_filter}: ${parts.join(" / ")}` : T.target_everyone;
  }

  function renderDispatches(rows) {
    const list = $("dispatch-list");
    if (!rows.length) { list.replaceChildren(el("li", { class: "empty", text: T.no_dispatches })); return; }
    list.replaceChildren(...[...rows].reverse().map((d) => el("li", {},
      el("strong", { text: fmt(T.dispatch_title, { n: d.number }) }),
      timeEl(d.created_at),
      d.created_by ? el("span", { text: fmt(T.dispatch_by, { name: d.created_by }) }) : null,
      d.recipients === null || d.recipients === undefined ? null : el("span", { text: people(d.recipients) }),
      d.finished_at
        ? el("span", { class: "run run-done", text: fmt(T.finished, { when: when(d.finished_at) }) })
        : el("span", { class: "run run-going", text: T.in_progress }),
      el("span", { class: "what", text: d.target?.escalation ? T.dispatch_escalation : targetSummary(d.target) }))));
  }

  // --- Delivery status (配信状況): counts per channel and state, and each person's chip per channel
  const CHANNELS = ["push", "email", "inapp"];
  const STATES = D.delivery_states || ["queued", "sent", "delivered", "opened", "answered", "failed"];
  let deliveries = D.deliveries || { counts: {}, total: 0, results: [] };
  const dFilters = { state: "", channel: "", department: "", q: "" };
  const dPage = D.deliveries_page || 50;
  let dOffset = 0;
  const dQuery = () => {
    const params = new URLSearchParams({ limit: dPage, offset: dOffset });
    for (const [k, v] of Object.entries(dFilters)) if (v) params.set(k, v);
    return params.toString();
  };
  const stateWord = (s) => L.delivery?.[s] || s;
  const channelWord = (c) => L.channel?.[c] || c;

  function renderDeliveryCounts(counts) {
    const box = $("deliveries");
    const channels = CHANNELS.filter((c) => counts[c]);
    if (!channels.length) { box.replaceChildren(el("p", { class: "empty", text: T.no_deliveries })); return; }
    // Each number is a button: it shows the people behind it in the list below.
    box.replaceChildren(el("table", { class: "deliveries" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }), STATES.map((s) => el("th", { scope: "col", class: "num" }, el("span", { class: `deliv deliv-${s}`, text: stateWord(s) }))))),
      el("tbody", {}, channels.map((c) => el("tr", {},
        el("th", { scope: "row", text: channelWord(c) }),
        STATES.map((s) => {
          const n = counts[c][s] || 0;
          const label = [el("span", { class: `cell-label deliv deliv-${s}`, text: stateWord(s) }), el("span", { class: "n", text: String(n) })];
          return el("td", { class: `num${n ? "" : " zero"}` }, n
            ? el("button", { type: "button", class: "count-filter", "data-channel": c, "data-state": s,
              title: fmt(T.delivery_filter_cell, { channel: channelWord(c), state: stateWord(s) }) }, label)
            : label);
        }))))));
  }

  function deliveryChip(c, d) {
    if (!d) {
      return el("span", { class: "dchip dchip-none", title: T.delivery_not_sent },
        el("span", { class: "dchip-channel", text: channelWord(c) }), " ", el("span", { class: "dchip-state", text: "—" }));
    }
    const moment = d.opened_at || d.delivered_at || d.sent_at || (d.state === "queued" || d.state === "failed" ? d.updated_at : null);
    return el("span", { class: `dchip dchip-${d.state}` },
      el("span", { class: "dchip-channel", text: channelWord(c) }), " ",
      el("b", { class: `dchip-state deliv-${d.state}`, text: stateWord(d.state) }),
      moment ? [" ", el("time", { class: "dchip-time", datetime: moment, text: when(moment) })] : null,
      d.round > 1 ? el("span", { class: "dchip-round", text: fmt(T.delivery_round, { n: d.round }) }) : null,
      d.state === "failed" ? el("span", { class: "dchip-reason", title: d.error || "", text: L.reason?.[d.reason] || d.error || "" }) : null);
  }

  const deliveryHeaders = [...document.querySelectorAll("#delivery-people thead th")].map((th) => th.textContent.trim());
  function deliveryRow(r) {
    return el("tr", { "data-person": r.person.id },
      el("td", { "data-label": deliveryHeaders[0] }, el("strong", { class: "who", text: r.person.name }),
        el("span", { class: "sub-line", text: r.person.department || T.no_department }),
        r.escalated_at ? el("span", { class: "sub-line escalated", text: fmt(T.delivery_escalated, { when: when(r.escalated_at) }) }) : null),
      CHANNELS.map((c) => el("td", { "data-channel": c }, deliveryChip(c, r.channels[c]))));
  }

  function renderDeliveries(data) {
    renderDeliveryCounts(data.counts || {});
    const body = $("delivery-body");
    if (!data.results.length) body.replaceChildren(el("tr", {}, el("td", { colspan: 4, class: "empty", text: T.deliveries_none })));
    else body.replaceChildren(...data.results.map(deliveryRow));
    $("deliveries-count").textContent = people(data.total);
    $("delivery-pager").hidden = data.total <= dPage;
    $("delivery-prev").disabled = dOffset <= 0;
    $("delivery-next").disabled = dOffset + dPage >= data.total;
    $("delivery-page-info").textContent = data.total
      ? fmt(T.deliveries_showing, { from: dOffset + 1, to: Math.min(dOffset + data.results.length, data.total), total: data.total }) : "";
  }

  let dSeq = 0;
  async function loadDeliveries() {
    const mine = ++dSeq;
    const data = await api(`${base}deliveries/?${dQuery()}`);
    if (mine !== dSeq) return;
    if (dOffset && !data.results.length && data.total) {  // the page emptied: go back to the last one
      dOffset = Math.max(0, Math.floor((data.total - 1) / dPage) * dPage);
      return loadDeliveries();
    }
    deliveries = data;
    renderDeliveries(deliveries);
    show($("delivery-error"), "");
    document.body.dataset.deliveriesLoaded = String(Date.now());
  }
  const reloadDeliveries = () => loadDeliveries().catch((err) => show($("delivery-error"), fmt(T.failed, { message: errorText(err) })));
  const dDep = $("d-department");
  for (const d of D.departments) dDep.append(el("option", { value: d.id, text: `${"　".repeat(d.depth)}${d.name}` }));
  const dFilter = (key, value) => { dFilters[key] = value; dOffset = 0; reloadDeliveries(); };
  $("delivery-filters").addEventListener("submit", (e) => e.preventDefault());
  $("d-state").addEventListener("change", (e) => dFilter("state", e.target.value));
  $("d-channel").addEventListener("change", (e) => dFilter("channel", e.target.value));
  dDep.addEventListener("change", (e) => dFilter("department", e.target.value));
  $("d-q").addEventListener("input", debounce((e) => dFilter("q", e.target.value.trim().slice(0, 100)), 300));
  $("delivery-prev").addEventListener("click", () => { dOffset = Math.max(0, dOffset - dPage); reloadDeliveries(); });
  $("delivery-next").addEventListener("click", () => { if (dOffset + dPage < deliveries.total) { dOffset += dPage; reloadDeliveries(); } });
  $("deliveries").addEventListener("click", (e) => {
    const button = e.target.closest(".count-filter");
    if (!button) return;
    $("d-state").value = dFilters.state = button.dataset.state;
    $("d-channel").value = dFilters.channel = button.dataset.channel;
    dOffset = 0;
    reloadDeliveries();
    $("delivery-people").scrollIntoView({ behavior: "smooth", block: "nearest" });
  });

  function tallyRow(r, name, tag = "tr") {
    // On a phone each row is a card, and each number carries its own label (icon and word).
    const cell = (n, key) => el("td", { class: `num${n ? "" : " zero"}${key === "answered" ? " col-answered" : ""}` },
      el("span", { class: "cell-label" }, key === "help" ? helpFlag() : statusPill(key)), el("span", { class: "n", text: String(n || 0) }));
    return el(tag, {}, el("th", { scope: "row", text: name }),
      cell(r.counts.safe, "safe"), cell(r.counts.minor, "minor"), cell(r.counts.serious, "serious"), cell(r.counts.answered, "answered"),
      cell(r.counts.none, "none"), cell(r.needs_help, "help"),
      el("td", { class: "rate-col" }, el("span", { class: "rate" }, rateBar(r.rate), el("span", { class: "pct", text: `${pct(r.rate)}%` })),
        el("span", { class: "sub-line", text: `${r.answered}/${r.total}` })));
  }

  function renderTally(tally) {
    const body = $("tally-body");
    if (!tally.departments.length) body.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "empty", text: T.no_tally })));
    else body.replaceChildren(...tally.departments.map((r) => tallyRow(r, r.name || T.no_department)));
    $("tally-foot").replaceChildren(tallyRow(tally.overall, T.everyone_total));
    // "Answered" (a form without the safety question) is only shown when someone is counted there.
    $("tally").classList.toggle("no-answered", !tally.overall.counts.answered);
  }

  // --- Results
  const depSelect = $("r-department");
  for (const d of D.departments) depSelect.append(el("option", { value: d.id, text: `${"　".repeat(d.depth)}${d.name}` }));
  const headers = [...document.querySelectorAll("#results thead th")].map((th) => th.textContent.trim());

  function deliveryCell(states) {
    return ["push", "email", "inapp"].filter((c) => states[c]).map((c) =>
      el("span", { class: `deliv deliv-${states[c]}`, text: fmt(T.delivery_of, { channel: L.channel?.[c] || c, state: L.delivery?.[states[c]] || states[c] }) }));
  }

  function resultRow(r) {
    const a = r.answer;
    const hasPlace = a && a.latitude !== null && a.latitude !== undefined && a.longitude !== null && a.longitude !== undefined;
    const coords = hasPlace ? `${Number(a.latitude).toFixed(5)}, ${Number(a.longitude).toFixed(5)}` : "";
    return el("tr", { "data-person": r.person.id },
      el("td", { "data-label": headers[0] }, el("strong", { class: "who", text: r.person.name }),
        el("span", { class: "sub-line", text: [r.person.department, r.person.login_id].filter(Boolean).join(" · ") })),
      el("td", { "data-label": headers[1] }, statusPill(r.status, r.status_label), r.needs_help ? [" ", helpFlag()] : null,
        r.answer_count > 1 ? el("span", { class: "sub-line", text: fmt(T.answers_n, { n: r.answer_count }) }) : null),
      el("td", { "data-label": headers[2] }, r.answered_at ? [
        el("span", { class: "sub-line" }, `${T.last_answer}: `, timeEl(r.answered_at)),
        r.first_answered_at !== r.answered_at ? el("span", { class: "sub-line" }, `${T.first_answer}: `, timeEl(r.first_answered_at)) : null,
      ] : null),
      el("td", { "data-label": headers[3] }, a ? [
        el("span", { text: a.source_label || L.source?.[a.source] }),
        a.entered_by ? el("span", { class: "sub-line", text: fmt(T.entered_by, { name: a.entered_by }) }) : null,
        a.proxy_note ? el("span", { class: "sub-line", text: fmt(T.note, { note: a.proxy_note }) }) : null,
      ] : null),
      el("td", { "data-label": headers[4] }, hasPlace ? el("a", {
        href: `https://www.openstreetmap.org/?mlat=${encodeURIComponent(a.latitude)}&mlon=${encodeURIComponent(a.longitude)}#map=16/${a.latitude}/${a.longitude}`,
        target: "_blank", rel: "noopener", "aria-label": fmt(T.map_label, { name: r.person.name }), text: coords }) : null),
      el("td", { "data-label": headers[5] }, deliveryCell(r.deliveries || {})),
      el("td", {}, el("button", { type: "button", "data-history": r.person.id, "data-name": r.person.name, text: T.history })));
  }

  function renderResults(data) {
    const body = $("results-body");
    if (!data.results.length) body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "empty", text: T.no_results })));
    else body.replaceChildren(...data.results.map(resultRow));
    $("results-count").textContent = people(data.total);
    const pager = $("pager");
    pager.hidden = data.total <= pageSize;
    $("page-prev").disabled = offset <= 0;
    $("page-next").disabled = offset + pageSize >= data.total;
    $("page-info").textContent = data.total
      ? fmt(T.showing, { from: offset + 1, to: Math.min(offset + data.results.length, data.total), total: data.total }) : "";
  }

  let loadSeq = 0;
  async function loadResults() {
    const mine = ++loadSeq;
    const data = await api(`${base}results/?${query({ limit: pageSize, offset })}`);
    if (mine !== loadSeq) return;
    results = data;
    renderResults(results);
    renderState();
  }
  const reloadResults = () => loadResults().catch((err) => show($("action-error"), fmt(T.failed, { message: errorText(err) })));
  $("result-filters").addEventListener("submit", (e) => e.preventDefault());
  depSelect.addEventListener("change", () => { filters.department = depSelect.value; offset = 0; reloadResults(); });
  $("r-answer").addEventListener("change", (e) => { filters.answer = e.target.value; offset = 0; reloadResults(); });
  $("r-q").addEventListener("input", debounce((e) => { filters.q = e.target.value.trim(); offset = 0; reloadResults(); }, 300));
  $("page-prev").addEventListener("click", () => { offset = Math.max(0, offset - pageSize); reloadResults(); });
  $("page-next").addEventListener("click", () => { offset += pageSize; reloadResults(); });

  function renderAll() {
    renderState();
    renderOverall(detail.tally.overall);
    renderDispatches(detail.dispatches);
    renderDeliveries(deliveries);
    renderTally(detail.tally);
    renderResults(results);
  }
  renderAll();

  // --- Refreshing: on the incident's events, and every few seconds while answers are open
  let busy = false;
  let again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const mineD = ++dSeq;  // a filter change meanwhile wins over this refresh's delivery page
      const [d, r, dl] = await Promise.all([api(base), api(`${base}results/?${query({ limit: pageSize, offset })}`),
        api(`${base}deliveries/?${dQuery()}`)]);
      if (mineD === dSeq) deliveries = dl;
      const wasOpen = isOpen();
      const firstSend = !detail.dispatches.length && d.dispatches.length;
      // Who a filtered send reaches changes as people answer: count again when the answers changed.
      const answersChanged = JSON.stringify(detail.tally.overall) !== JSON.stringify(d.tally.overall);
      detail = d;
      results = r;
      renderAll();
      if (firstSend) resendPreset();
      else if (wasOpen !== isOpen() || answersChanged) updatePreview();
      document.body.dataset.safetyRefreshed = String(Date.now());
    } catch { /* a later refresh tries again */ }
    finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }
  const refreshSoon = debounce(refresh, 300);
  onEvent("safety.incident", (frame) => { if (frame.data?.id === id) refreshSoon(); });
  setInterval(() => { if (isOpen() && !document.hidden) refresh(); }, (D.refresh_seconds || 10) * 1000);
  document.addEventListener("visibilitychange", () => { if (!document.hidden && isOpen()) refresh(); });
  window.safetyRefresh = refresh;

  // --- Actions
  const actionError = $("action-error");
  const actionStatus = $("action-status");
  async function act(path, confirmText, doneText) {
    if (!confirm(confirmText)) return;
    show(actionError, "");
    try {
      await api(`${base}${path}`, { method: "POST", data: {} });
      show(actionStatus, doneText);
      await refresh();
    } catch (err) {
      show(actionError, fmt(T.failed, { message: errorText(err) }));
    }
  }
  $("open-button")?.addEventListener("click", () => act("open/", T.confirm_open, T.opened));
  $("complete-button")?.addEventListener("click", () => act("complete/", T.confirm_complete, T.completed));

  // --- Sending
  const panel = $("send-panel");
  if (panel) {
    const sendChosen = new Map();
    const sendDep = $("send-department");
    for (const d of D.send_departments) sendDep.append(el("option", { value: d.id, text: `${"　".repeat(d.depth)}${d.name}` }));
    for (const p of D.prefectures) $("send-region").append(el("option", { value: p.code, text: p.name }));
    for (const r of D.roles) $("send-role").append(el("option", { value: r.value, text: r.label }));
    const mode = () => panel.querySelector('input[name="target"]:checked')?.value || "everyone";
    const target = () => {
      const m = mode();
      if (m === "chosen") return { mode: m, person_ids: [...sendChosen.keys()] };
      if (m === "filter") {
        const dep = sendDep.value, region = $("send-region").value, role = $("send-role").value;
        return { mode: m, department_ids: dep ? [Number(dep)] : [], regions: region ? [region] : [], roles: role ? [role] : [], answer: $("send-answer").value };
      }
      return { mode: "everyone" };
    };
    const preview = $("send-preview");
    let reach = null;
    let previewSeq = 0;
    updatePreview = debounce(async () => {
      const mine = ++previewSeq;
      const t = target();
      reach = null;
      if (t.mode === "chosen" && !t.person_ids.length) { preview.textContent = T.choose_people; return; }
      preview.textContent = T.counting;
      try {
        const { recipients } = await api(`${base}dispatches/`, { method: "POST", data: { target: t, preview: true } });
        if (mine !== previewSeq) return;
        reach = recipients;
        preview.textContent = recipients ? fmt(recipients === 1 ? T.reaches_one : T.reaches, { n: recipients }) : T.reaches_none;
      } catch (err) {
        if (mine !== previewSeq) return;
        preview.textContent = fmt(T.failed, { message: errorText(err) });
      }
    }, 250);
    const syncMode = () => {
      $("send-filter").hidden = mode() !== "filter";
      $("send-chosen").hidden = mode() !== "chosen";
      updatePreview();
    };
    resendPreset = () => {
      panel.querySelector('input[name="target"][value="filter"]').checked = true;
      sendDep.value = "";
      $("send-region").value = "";
      $("send-role").value = "";
      $("send-answer").value = "unanswered";
      syncMode();
    };
    panel.addEventListener("change", (e) => { if (e.target.name === "target") syncMode(); else if (e.target.closest("#send-filter")) updatePreview(); });

    const chips = $("send-chosen-list");
    const renderChosen = () => {
      chips.replaceChildren(...[...sendChosen.values()].map((p) => el("li", { class: "chip" },
        el("span", { text: p.name }),
        el("button", { type: "button", "aria-label": `${T.remove}: ${p.name}`, title: T.remove, onclick: () => {
          sendChosen.delete(p.id); renderChosen(); findPeople(); updatePreview();
        } }, "✕"))));
    };
    const findPeople = searchBox({
      input: $("send-q"), list: $("send-found"), status: $("send-q-status"), minLength: 1,
      load: (q) => api(`safety/people/?q=${encodeURIComponent(q)}`),
      row: (p) => el("li", {},
        el("span", { class: "who" }, el("strong", { text: p.name }),
          el("span", { class: "sub-line", text: [p.department, p.safety_user ? "" : T.no_safety_id].filter(Boolean).join(" · ") })),
        el("button", { type: "button", disabled: sendChosen.has(p.id) || !p.safety_user, "aria-label": `${T.add}: ${p.name}`,
          onclick: (e) => { sendChosen.set(p.id, p); renderChosen(); e.target.disabled = true; updatePreview(); } }, T.add)),
    });

    const sendError = $("send-error");
    const sendButton = $("send-button");
    sendButton.addEventListener("click", async () => {
      show(sendError, "");
      const t = target();
      if (t.mode === "chosen" && !t.person_ids.length) { show(sendError, T.choose_people); return; }
      const question = reach === null ? fmt(T.confirm_send_unknown, { title: detail.title }) : fmt(T.confirm_send, { title: detail.title, n: reach });
      if (!confirm(question)) return;
      sendButton.disabled = true;
      try {
        const d = await api(`${base}dispatches/`, { method: "POST", data: { target: t } });
        show(actionStatus, fmt(T.sent_ok, { n: d.recipients }));
        sendChosen.clear();
        renderChosen();
        await refresh();
        updatePreview();
      } catch (err) {
        show(sendError, fmt(T.failed, { message: errorText(err) }));
      } finally {
        sendButton.disabled = false;
      }
    });
    syncMode();
  }

  // --- A person's answers, and a proxy answer
  const dialog = $("person-dialog");
  closeOnBackdrop(dialog);
  const qByKey = Object.fromEntries((D.questions || []).map((q) => [q.key, q]));
  let current = null;

  function valueText(q, value) {
    if (!q) return String(value);
    if (q.kind === "text") return String(value);
    const names = Object.fromEntries(q.choices.map((c) => [c.key, c.label]));
    return [].concat(value).map((v) => names[v] || v).join(" / ");
  }

  function historyItem(a) {
    const place = a.latitude !== null && a.latitude !== undefined && a.longitude !== null;
    return el("li", {},
      el("div", { class: "history-top" }, timeEl(a.created_at, { year: true }), statusPill(a.status || "none"), a.needs_help ? helpFlag() : null,
        el("span", { text: a.source_label })),
      a.entered_by ? el("span", { class: "sub-line", text: fmt(T.entered_by, { name: a.entered_by }) }) : null,
      a.proxy_note ? el("span", { class: "sub-line", text: fmt(T.note, { note: a.proxy_note }) }) : null,
      place ? el("a", { class: "sub-line", href: `https://www.openstreetmap.org/?mlat=${a.latitude}&mlon=${a.longitude}#map=16/${a.latitude}/${a.longitude}`,
        target: "_blank", rel: "noopener", text: `${T.location}: ${Number(a.latitude).toFixed(5)}, ${Number(a.longitude).toFixed(5)}` }) : null,
      el("ul", { class: "values" }, Object.entries(a.values || {}).map(([k, v]) =>
        el("li", {}, el("span", { class: "hint", text: `${qByKey[k]?.label || k}: ` }), valueText(qByKey[k], v)))));
  }

  async function loadHistory() {
    const list = $("history");
    list.replaceChildren(el("li", { class: "hint", text: T.loading }));
    try {
      const data = await api(`${base}people/${current.id}/answers/`);
      list.replaceChildren(...(data.answers.length ? [...data.answers].reverse().map(historyItem) : [el("li", { class: "empty", text: T.history_none })]));
    } catch (err) {
      list.replaceChildren(el("li", { class: "error", text: fmt(T.failed, { message: errorText(err) }) }));
    }
  }

  function proxyFields() {
    const box = $("proxy-questions");
    if (!D.questions.length) { box.replaceChildren(el("p", { class: "hint", text: T.proxy_no_questions })); return; }
    box.replaceChildren(...D.questions.map((q) => {
      const name = `proxy-${q.key}`;
      const legend = el("legend", {}, q.label, q.required ? el("span", { class: "req", "aria-hidden": "true", text: " *" }) : null);
      if (q.kind === "text") {
        return el("fieldset", { class: "proxy-question" }, legend,
          el("textarea", { name, rows: 2, maxlength: 1000, "aria-label": q.label }));
      }
      const type = q.kind === "single" ? "radio" : "checkbox";
      return el("fieldset", { class: "proxy-question", "aria-required": q.required ? "true" : null }, legend,
        el("div", { class: "safety-choices" }, q.choices.map((c) => el("label", {
          class: `safety-choice${q.key === "safety" ? ` st-${c.key}` : ""}` },
          el("input", { type, name, value: c.key }), el("span", { text: c.label })))));
    }));
  }

  function proxyValues() {
    const values = {};
    for (const q of D.questions) {
      const name = `proxy-${q.key}`;
      if (q.kind === "text") {
        const text = $("proxy-form").querySelector(`[name="${name}"]`).value.trim();
        if (text) values[q.key] = text;
      } else if (q.kind === "single") {
        const picked = $("proxy-form").querySelector(`[name="${name}"]:checked`);
        if (picked) values[q.key] = picked.value;
      } else {
        const picked = [...$("proxy-form").querySelectorAll(`[name="${name}"]:checked`)].map((i) => i.value);
        if (picked.length) values[q.key] = picked;
      }
    }
    return values;
  }

  root.addEventListener("click", (e) => {
    const button = e.target.closest("[data-history]");
    if (!button) return;
    current = { id: Number(button.dataset.history), name: button.dataset.name };
    $("person-dialog-title").textContent = fmt(T.history_for, { name: current.name });
    show($("proxy-error"), "");
    show($("proxy-status"), "");
    $("proxy-form").hidden = !isOpen();
    $("proxy-closed").hidden = isOpen();
    $("proxy-form").reset();
    proxyFields();
    dialog.showModal();
    loadHistory();
  });
  $("proxy-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    show($("proxy-error"), "");
    show($("proxy-status"), "");
    const note = $("proxy-note");
    if (!note.value.trim()) {
      note.setAttribute("aria-invalid", "true");
      show($("proxy-error"), note.placeholder);
      note.focus();
      return;
    }
    note.removeAttribute("aria-invalid");
    const button = e.submitter || $("proxy-form").querySelector("button");
    button.disabled = true;
    try {
      await api(`${base}people/${current.id}/answers/`, { method: "POST", data: { values: proxyValues(), note: note.value.trim() } });
      show($("proxy-status"), T.proxy_saved);
      $("proxy-form").reset();
      await loadHistory();
      refresh();
    } catch (err) {
      show($("proxy-error"), fmt(T.failed, { message: errorText(err) }));
    } finally {
      button.disabled = false;
    }
  });
}

// --- Templates (定型文) --------------------------------------------------------------------------------------

function initTemplates() {
  const list = $("template-list");
  let rows = D.templates || [];
  let searching = false;
  const formTemplate = $("template-form-template");

  function fill(form, t) {
    form.elements.name.value = t?.name || "";
    form.elements.title.value = t?.title || "";
    form.elements.body.value = t?.body || "";
  }
  const fields = (form) => ({ name: form.elements.name.value.trim(), title: form.elements.title.value.trim(), body: form.elements.body.value.trim() });

  function item(t) {
    return el("li", { class: "template-item", "data-id": t.id },
      el("strong", { text: t.name }),
      t.title ? el("span", { class: "sub-line", text: t.title }) : null,
      t.body ? el("p", { class: "body", text: t.body }) : null,
      el("div", { class: "button-row" },
        el("button", { type: "button", "data-act": "edit", "aria-label": `${T.edit}: ${t.name}`, text: T.edit }),
        el("button", { type: "button", class: "danger", "data-act": "delete", "aria-label": `${T.delete}: ${t.name}`, text: T.delete })));
  }

  function render() {
    if (!rows.length) list.replaceChildren(el("li", { class: "empty", text: searching ? T.no_match : T.none }));
    else list.replaceChildren(...rows.map(item));
  }
  render();

  const status = $("templates-status");
  const search = debounce(async () => {
    const q = $("templates-q").value.trim();
    searching = !!q;
    try {
      rows = await api(`safety/templates/?q=${encodeURIComponent(q)}`);
      render();
      status.textContent = "";
    } catch (err) {
      status.textContent = fmt(T.failed, { message: errorText(err) });
    }
  }, 250);
  $("templates-q").addEventListener("input", search);

  const newForm = document.querySelector('#template-new form');
  newForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const error = newForm.querySelector(".error");
    show(error, "");
    try {
      const t = await api("safety/templates/", { method: "POST", data: fields(newForm) });
      fill(newForm, null);
      rows = [...rows, t].sort((a, b) => a.name.localeCompare(b.name, lang));
      render();
      show(status, T.saved);
      list.querySelector(`[data-id="${t.id}"] button`)?.focus();
    } catch (err) {
      show(error, fmt(T.failed, { message: errorText(err) }));
    }
  });

  list.addEventListener("click", async (e) => {
    const button = e.target.closest("[data-act]");
    if (!button) return;
    const li = button.closest(".template-item");
    const t = rows.find((r) => String(r.id) === li?.dataset.id);
    if (!t) return;
    if (button.dataset.act === "delete") {
      if (!confirm(fmt(T.confirm_delete, { name: t.name }))) return;
      try {
        await api(`safety/templates/${t.id}/`, { method: "DELETE" });
        rows = rows.filter((r) => r.id !== t.id);
        render();
        status.textContent = T.deleted;
      } catch (err) {
        status.textContent = fmt(T.failed, { message: errorText(err) });
      }
    } else if (button.dataset.act === "edit") {
      const form = formTemplate.content.firstElementChild.cloneNode(true);
      fill(form, t);
      li.replaceChildren(form);
      form.elements.name.focus();
      form.querySelector('[data-act="cancel"]').addEventListener("click", () => { li.replaceWith(item(t)); });
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const error = form.querySelector(".error");
        show(error, "");
        try {
          const saved = await api(`safety/templates/${t.id}/`, { method: "PATCH", data: fields(form) });
          rows = rows.map((r) => (r.id === saved.id ? saved : r));
          li.replaceWith(item(saved));
          show(status, T.saved);
        } catch (err) {
          show(error, fmt(T.failed, { message: errorText(err) }));
        }
      });
    }
  });
}

// --- Start -------------------------------------------------------------------------------------------------

if ($("safety-incidents")) initList();
if ($("incident-form")) initForm();
if ($("incident-detail")) initDetail();
if ($("safety-templates")) initTemplates();
