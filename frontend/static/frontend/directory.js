// Directory pages: search as you type, the person editor, department management, and the import page with
// its live progress bar. Each enhances a page the server has already rendered; every write goes through the
// directory REST API (/<slug>/api/directory/…). Texts come translated from the page (#directory-texts).
import { api, onEvent } from "./app.js";

const org = document.body.dataset.org;
const texts = readJson("directory-texts");

function readJson(id) {
  const el = document.getElementById(id);
  try { return el ? JSON.parse(el.textContent) : {}; } catch { return {}; }
}

// "%(n)s people found." with {n: 3} → "3 people found."
function fmt(template, values = {}) {
  return String(template ?? "").replace(/%\((\w+)\)s/g, (_, key) => String(values[key] ?? ""));
}

function csrfToken() {
  const m = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

// Phone links come from the server in the organisation's scheme, which the server validates; refuse anything
// that would run script anyway, in case an old value slipped through.
const UNSAFE_HREF = /^\s*(javascript|vbscript|data|file):/i;
function safeHref(href) { return href && !UNSAFE_HREF.test(href) ? href : ""; }

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

function errorMessage(err) {
  return err?.body?.message || err?.message || String(err);
}

// --- A person row and its parts (the same markup as the server's templates) ------------------------------

function phoneLink(phone) {
  const kinds = texts.phone_kinds || {};
  const href = safeHref(phone.href);
  return el("a", { class: "phone", href: href || undefined, "data-kind": phone.kind },
    el("span", { class: "phone-icon", "aria-hidden": "true", text: "☎" }), " ",
    el("span", { class: "phone-kind", text: kinds[phone.kind] || phone.kind }), " ",
    el("span", { class: "phone-number", text: phone.number }));
}

const SAFETY_ICONS = { safe: "✓", minor: "▲", serious: "✚", none: "?" };
function safetyBadge(answer) {
  if (answer === null || answer === undefined) return null;
  const words = texts.safety || {};
  const status = Object.hasOwn(SAFETY_ICONS, answer.status) ? answer.status : "none";
  return el("span", { class: `safety safety-${status}`, title: words.title },
    el("span", { class: "safety-icon", "aria-hidden": "true", text: SAFETY_ICONS[status] }), " ",
    answer.label || words[status] || status);
}

// Administrators only: the page's texts carry the problem words, and the API rows `contact_problems`.
function contactBadge(codes) {
  const words = texts.contact_problems;
  if (!words || !codes || !codes.length) return null;
  return el("span", { class: "contact-badge", title: texts.contact_title },
    el("span", { class: "contact-badge-icon", "aria-hidden": "true", text: "⚠" }), " ",
    el("span", { class: "sr-only", text: `${texts.contact_title}: ` }),
    codes.map((code) => words[code] || code).join("・"));
}

function personRow(template, p) {
  const row = template.content.firstElementChild.cloneNode(true);
  row.dataset.id = p.id;
  const slot = (name) => row.querySelector(`[data-slot="${name}"]`);
  slot("link").href = `/${org}/directory/people/${p.id}/`;
  slot("name").textContent = p.name;
  slot("kana").textContent = p.kana || "";
  slot("department").textContent = p.department ? p.department.name : "";
  slot("position").textContent = p.position || "";
  slot("contact")?.replaceChildren(...[contactBadge(p.contact_problems)].filter(Boolean));
  slot("safety").replaceChildren(...[safetyBadge(p.safety_answer)].filter(Boolean));
  slot("phones").replaceChildren(...p.phones.map(phoneLink));
  return row;
}

// --- Search ----------------------------------------------------------------------------------------------

function setUpSearch() {
  const form = document.getElementById("directory-search");
  if (!form) return;
  const input = form.elements.q;
  const select = form.elements.department;
  const list = document.getElementById("results");
  const count = document.getElementById("result-count");
  const more = document.getElementById("more");
  const template = document.getElementById("person-row");
  const pageSize = Number(form.dataset.pageSize) || 50;
  let shown = list.children.length;
  let timer = null;
  let controller = null;
  let composing = false;

  function params({ offset = 0 } = {}) {
    const p = new URLSearchParams();
    const q = input.value.trim();
    if (q) p.set("q", q);
    if (select.value) p.set("department", select.value);
    if (form.elements.inactive?.checked) p.set("inactive", "1");
    if (offset) p.set("offset", String(offset));
    return p;
  }

  function describe(pageCount) {
    if (shown === 0) return texts.nobody;
    if (pageCount === pageSize) return fmt(texts.found_first, { n: shown });
    return shown === 1 ? texts.found_one : fmt(texts.found, { n: shown });
  }

  async function run({ append = false } = {}) {
    clearTimeout(timer);
    // Deactivated people are found by the page itself (the REST search lists active people only).
    if (form.elements.inactive?.checked) { form.submit(); return; }
    controller?.abort();
    controller = new AbortController();
    const query = params({ offset: append ? shown : 0 });
    form.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(`/${org}/api/directory/people/?${query}`, {
        credentials: "same-origin", signal: controller.signal, headers: { Accept: "application/json" },
      });
      if (!response.ok) throw new Error(response.statusText);
      const data = await response.json();
      if (!append) { list.replaceChildren(); shown = 0; }
      list.append(...data.results.map((p) => personRow(template, p)));
      shown += data.results.length;
      count.textContent = describe(data.results.length);
      more.hidden = data.results.length < pageSize;
      const next = params({ offset: shown });
      more.href = `?${next}`;
      // The address follows the search, so reload and "back" from a card keep it.
      const here = params().toString();
      history.replaceState(null, "", here ? `?${here}` : location.pathname);
      markTree();
    } catch (err) {
      if (err.name === "AbortError") return;
      count.textContent = texts.search_failed;
    } finally {
      form.removeAttribute("aria-busy");
    }
  }

  function markTree() {
    for (const link of document.querySelectorAll(".dir-aside [data-department]")) {
      if (link.dataset.department === select.value) link.setAttribute("aria-current", "true");
      else link.removeAttribute("aria-current");
    }
  }

  const soon = () => {
    clearTimeout(timer);
    // Including deactivated people reloads the page, so wait for Enter rather than reload mid-word.
    if (!form.elements.inactive?.checked) timer = setTimeout(() => run(), 250);
  };
  // Japanese input: search once the word is composed, not on every keystroke of the IME.
  input.addEventListener("compositionstart", () => { composing = true; });
  input.addEventListener("compositionend", () => { composing = false; soon(); });
  input.addEventListener("input", (e) => { if (!composing && !e.isComposing) soon(); });
  select.addEventListener("change", () => run());
  form.elements.inactive?.addEventListener("change", () => form.submit());
  form.addEventListener("submit", (e) => { e.preventDefault(); run(); });
  more.addEventListener("click", (e) => { e.preventDefault(); run({ append: true }); });

  // The tree beside the results filters in place.
  for (const link of document.querySelectorAll(".dir-aside [data-department]")) {
    link.addEventListener("click", (e) => {
      if (e.metaKey || e.ctrlKey || e.shiftKey) return;
      e.preventDefault();
      select.value = link.dataset.department;
      run();
      if (narrow.matches) document.getElementById("tree-details").open = false;
      list.scrollIntoView({ block: "nearest" });
    });
  }
  // On a phone the tree sits below the results, folded; on a laptop it stays open beside them.
  const narrow = window.matchMedia("(max-width: 719px)");
  const details = document.getElementById("tree-details");
  if (details && narrow.matches) details.open = false;
}

// --- Forms: collect values, show the API's field errors ----------------------------------------------

function formValues(form) {
  const data = {};
  for (const field of form.elements) {
    if (!field.name || field.type === "submit" || field.type === "button" || field.name === "id") continue;
    if (field.name === "roles") continue;
    if (field.type === "checkbox") data[field.name] = field.checked;
    else if (field.name.endsWith("_id") && field.name !== "anpi_login_id" && field.name !== "login_id")
      data[field.name] = field.value ? Number(field.value) : null;
    else if (field.name === "anpi_login_id") data[field.name] = field.value.trim() || null;
    else if (field.name === "sort_order") data[field.name] = field.value === "" ? 0 : Number(field.value);
    else data[field.name] = field.value;
  }
  const roles = form.querySelectorAll('input[name="roles"]');
  // A disabled box (your own administrator role) still counts: it is shown ticked and cannot be unticked.
  if (roles.length) data.roles = [...roles].filter((r) => r.checked).map((r) => r.value);
  return data;
}

function clearErrors(form) {
  form.querySelector("#form-error")?.setAttribute("hidden", "");
  for (const p of form.querySelectorAll(".field-error")) { p.hidden = true; p.textContent = ""; }
  for (const f of form.querySelectorAll("[aria-invalid]")) f.removeAttribute("aria-invalid");
}

function showErrors(form, err) {
  const body = err.body || {};
  // Services answer {details: {field: "message"}}; serializers {fields: {field: ["message", …]}}.
  const fields = { ...(body.fields || {}), ...(body.details || {}) };
  let first = null;
  for (const [name, value] of Object.entries(fields)) {
    const message = Array.isArray(value) ? value.join(" ") : typeof value === "string" ? value : "";
    const holder = form.querySelector(`#e-${CSS.escape(name)}`);
    if (!holder) continue;
    holder.textContent = message && message !== "x" && message !== "taken" ? message : body.message || "";
    holder.hidden = false;
    const control = form.querySelector(`[name="${CSS.escape(name)}"]`);
    control?.setAttribute("aria-invalid", "true");
    first ||= control;
  }
  const top = form.querySelector("#form-error");
  if (top) {
    top.textContent = first ? (body.message && body.code !== "invalid" ? body.message : texts.fix_fields) : fmt(texts.failed, { message: errorMessage(err) });
    top.hidden = false;
  }
  (first || top)?.focus?.();
  if (!first) top?.scrollIntoView({ block: "nearest" });
}

function busy(button, on) {
  if (!button) return;
  button.disabled = on;
  button.setAttribute("aria-busy", on ? "true" : "false");
}

// --- Person: edit, add, deactivate -----------------------------------------------------------------------

function setUpPerson() {
  const form = document.getElementById("person-form");
  if (form) {
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearErrors(form);
      const id = form.dataset.personId;
      const button = form.querySelector("button.primary");
      busy(button, true);
      try {
        const saved = id
          ? await api(`directory/people/${id}/`, { method: "PATCH", data: formValues(form) })
          : await api("directory/people/", { method: "POST", data: formValues(form) });
        location.assign(`/${org}/directory/people/${saved.id}/?saved=1`);
      } catch (err) {
        showErrors(form, err);
      } finally {
        busy(button, false);
      }
    });
  }
  const toggle = document.getElementById("person-active");
  toggle?.addEventListener("click", async () => {
    const active = toggle.dataset.active === "true";
    if (active && !window.confirm(fmt(texts.confirm_deactivate, { name: toggle.dataset.name }))) return;
    const error = document.getElementById("active-error");
    error.hidden = true;
    busy(toggle, true);
    try {
      await api(`directory/people/${toggle.dataset.personId}/active/`, { method: "POST", data: { active: !active } });
      location.assign(`/${org}/directory/people/${toggle.dataset.personId}/?saved=1`);
    } catch (err) {
      error.textContent = errorMessage(err);
      error.hidden = false;
      busy(toggle, false);
    }
  });
}

// --- Departments: add, rename, move, delete --------------------------------------------------------------

function setUpDepartments() {
  const dialog = document.getElementById("department-dialog");
  if (!dialog) return;
  const form = document.getElementById("department-form");
  const title = document.getElementById("department-dialog-title");
  const remove = document.getElementById("department-delete");
  const removeHint = document.getElementById("department-delete-hint");
  const parent = form.elements.parent_id;

  function open({ id = "", name = "", values = {} } = {}) {
    form.reset();
    clearErrors(form);
    form.elements.id.value = id;
    for (const [key, value] of Object.entries(values)) {
      if (form.elements[key]) form.elements[key].value = value ?? "";
    }
    // A department cannot move inside itself or anything below it.
    const below = new Set();
    if (id) {
      const node = document.querySelector(`.tree-node[data-id="${id}"]`);
      below.add(String(id));
      for (const child of node?.querySelectorAll(".tree-node") || []) below.add(child.dataset.id);
    }
    for (const option of parent.options) option.disabled = below.has(option.value);
    title.textContent = id ? fmt(texts.edit_department, { name }) : texts.add_department;
    remove.hidden = !id;
    removeHint.hidden = !id;
    dialog.showModal();
    form.elements.name.focus();
  }

  document.getElementById("department-add")?.addEventListener("click", () => open());
  for (const button of document.querySelectorAll("[data-edit-department]")) {
    button.addEventListener("click", async () => {
      const id = button.dataset.editDepartment;
      try {
        const d = await api(`directory/departments/${id}/`);
        open({ id, name: d.name, values: {
          name: d.name, name_kana: d.name_kana, code: d.code, parent_id: d.parent_id ?? "",
          sort_order: d.sort_order, phone_number: d.phone_number, email: d.email,
        } });
      } catch (err) {
        window.alert(fmt(texts.failed, { message: errorMessage(err) }));
      }
    });
  }
  dialog.querySelector("[data-close]").addEventListener("click", () => dialog.close());

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    const id = form.elements.id.value;
    const button = form.querySelector("button.primary");
    busy(button, true);
    try {
      await api(id ? `directory/departments/${id}/` : "directory/departments/", {
        method: id ? "PATCH" : "POST", data: formValues(form),
      });
      location.reload();
    } catch (err) {
      showErrors(form, err);
      busy(button, false);
    }
  });

  remove.addEventListener("click", async () => {
    const id = form.elements.id.value;
    if (!id || !window.confirm(fmt(texts.confirm_delete_department, { name: form.elements.name.value }))) return;
    clearErrors(form);
    try {
      await api(`directory/departments/${id}/`, { method: "DELETE" });
      location.reload();
    } catch (err) {
      showErrors(form, err);
    }
  });
}

// --- Import: upload, live progress, preview, confirm -----------------------------------------------------

const CHECK_DONE = new Set(["previewed", "invalid", "failed", "applied"]);
const APPLY_DONE = new Set(["applied", "failed", "invalid"]);
const POLL_AFTER_MS = 3000; // no live event for this long: ask the API instead (events can be missed)

function setUpImport() {
  const page = document.getElementById("import-page");
  if (!page) return;
  const form = document.getElementById("import-form");
  const uploadError = document.getElementById("import-error");
  const status = document.getElementById("import-status");
  const bar = document.getElementById("import-bar");
  const percentText = document.getElementById("import-percent");
  const phaseText = document.getElementById("import-phase");
  const preview = document.getElementById("import-preview");
  const confirmButton = document.getElementById("import-confirm");
  const restart = document.getElementById("import-restart");
  const result = document.getElementById("import-result");
  const errorsBox = document.getElementById("import-errors");
  const phases = texts.phases || {};
  const maxBytes = Number(page.dataset.maxBytes) || Infinity;

  let job = null;              // the job this page follows
  let waiting = null;          // "check" or "apply" while the server works
  let lastHeard = 0;           // when the last live event or answer about the job arrived
  let poller = null;
  const early = new Map();     // progress that arrived before the upload's answer said which job it is

  function setProgress(percent, phase) {
    const value = Math.max(0, Math.min(100, Math.round(percent)));
    bar.value = value;
    bar.setAttribute("value", String(value));
    bar.textContent = `${value} %`;
    percentText.textContent = `${value} %`;
    if (phase !== undefined) phaseText.textContent = phases[phase] || "";
    // What the bar showed, in order: tests (and curious people) can read it back.
    bar.dataset.seen = [...(bar.dataset.seen ? bar.dataset.seen.split(",") : []), value].slice(-50).join(",");
  }

  function progressFor(data) {
    if (data.job !== job) return;
    lastHeard = Date.now();
    // Progress only moves forward within a step; a late frame must not pull the bar back.
    if (data.percent >= Number(bar.value)) setProgress(data.percent, data.phase === "apply" ? "apply" : "check");
  }

  onEvent("import.progress", (frame) => {
    const data = frame.data || {};
    if (job === null) { early.set(data.job, [...(early.get(data.job) || []), data]); return; }
    progressFor(data);
  });
  const onOutcome = (frame) => { if (frame.data?.job === job) { lastHeard = Date.now(); refresh(); } };
  onEvent("import.checked", onOutcome);
  onEvent("import.finished", onOutcome);

  function watch(step) {
    waiting = step;
    lastHeard = Date.now();
    clearInterval(poller);
    poller = setInterval(() => {
      if (waiting && Date.now() - lastHeard > POLL_AFTER_MS) { lastHeard = Date.now(); refresh(); }
    }, 1000);
  }
  function stopWatching() { waiting = null; clearInterval(poller); }

  async function refresh() {
    if (job === null) return;
    try {
      show(await api(`directory/imports/${job}/`));
    } catch (err) {
      phaseText.textContent = fmt(texts.failed, { message: errorMessage(err) });
    }
  }

  function count(path, value) {
    const cell = preview.querySelector(`[data-count="${path}"]`);
    if (cell) cell.textContent = value === undefined ? "–" : String(value);
  }

  function renderReport(report, data) {
    const applied = data.status === "applied";
    const heading = document.getElementById("import-preview-title");
    heading.textContent = applied ? heading.dataset.result : heading.dataset.preview;
    const files = [data.departments_file, data.users_file].filter(Boolean).join(", ");
    document.getElementById("import-files").textContent = files + (data.full_sync ? ` · ${texts.full_sync}` : "");
    const hasDepartments = Boolean(data.departments_file);
    const hasUsers = Boolean(data.users_file);
    for (const key of ["created", "updated", "unchanged", "removed"])
      count(`departments.${key}`, hasDepartments ? report.departments?.[key] : undefined);
    for (const key of ["created", "updated", "unchanged", "deactivated"])
      count(`users.${key}`, hasUsers ? report.users?.[key] : undefined);
    if (!hasDepartments) preview.querySelectorAll('[data-count^="departments."]').forEach((c) => { c.title = texts.not_uploaded; });
    if (!hasUsers) preview.querySelectorAll('[data-count^="users."]').forEach((c) => { c.title = texts.not_uploaded; });

    // Removals are what an administrator must not miss: said in words, with a mark, above the lists.
    const removals = document.getElementById("import-removals");
    const deactivated = report.users?.deactivated || 0;
    const removed = report.departments?.removed || 0;
    const lines = [];
    if (deactivated) lines.push(fmt(texts.removals_users, { n: deactivated }));
    if (removed) lines.push(fmt(texts.removals_departments, { n: removed }));
    removals.textContent = lines.map((l) => `⚠ ${l}`).join(" ");
    removals.hidden = lines.length === 0 || applied;
    preview.querySelector("tr.removals").classList.toggle("has-removals", deactivated + removed > 0);

    const lists = document.getElementById("import-lists");
    lists.replaceChildren();
    for (const kind of ["departments", "users"]) {
      const names = report.lists?.[kind] || {};
      for (const [change, label] of Object.entries(texts.lists?.[kind] || {})) {
        const ids = names[change] || [];
        const total = report[kind]?.[change] ?? ids.length;
        if (!total) continue;
        const removal = change === "removed" || change === "deactivated";
        const items = ids.map((id) => el("li", { text: id }));
        if (total > ids.length) items.push(el("li", { class: "hint", text: fmt(texts.and_more, { n: total - ids.length }) }));
        lists.append(el("details", { class: removal ? "list removal" : "list", open: removal, "data-list": `${kind}.${change}` },
          el("summary", {}, removal ? el("span", { "aria-hidden": "true", text: "⚠ " }) : null, `${label} (${total})`),
          el("ul", {}, ...items)));
      }
    }

    const licence = document.getElementById("import-licence");
    licence.replaceChildren();
    for (const [key, numbers] of Object.entries(report.licence || {})) {
      const over = numbers.after > numbers.limit;
      licence.append(el("div", { class: over ? "over" : undefined },
        el("dt", { text: texts.licence?.[key] || key }),
        el("dd", {}, `${numbers.after} / ${numbers.limit}`, over ? el("strong", { text: ` ⚠ ${texts.over_limit}` }) : null)));
    }
    licence.hidden = document.getElementById("import-licence-title").hidden = !licence.children.length;
    confirmButton.textContent = deactivated ? fmt(texts.apply_with_removals, { n: deactivated }) : `✓ ${texts.apply}`;
  }

  function renderErrors(errors) {
    errorsBox.hidden = errors.length === 0;
    if (!errors.length) return;
    document.getElementById("import-error-count").textContent =
      errors.length === 1 ? texts.error_one : fmt(texts.error_count, { n: errors.length });
    const heads = [...errorsBox.querySelectorAll("thead th")].map((th) => th.textContent);
    errorsBox.querySelector("tbody").replaceChildren(...errors.map((e) => el("tr", {},
      el("td", { "data-label": heads[0], text: texts.files?.[e.file || ""] || e.file || "" }),
      el("td", { "data-label": heads[1], text: e.line ?? "–" }),
      el("td", { "data-label": heads[2] }, e.column ? el("code", { text: e.column }) : "–"),
      el("td", { "data-label": heads[3] },
        el("strong", { text: texts.reasons?.[e.code] || e.code }), el("br"), el("span", { class: "hint", text: e.message })))));
  }

  function show(data) {
    status.hidden = false;
    const report = data.status === "applied" ? data.result || data.preview : data.preview;
    if (report) renderReport(report, data);
    // With errors nothing will be applied, so the errors are the whole story: no preview of changes.
    const errors = data.errors || [];
    preview.hidden = !report || errors.length > 0;
    renderErrors(errors);
    confirmButton.hidden = !(data.status === "previewed" && !errors.length);
    result.hidden = data.status !== "applied";
    result.textContent = data.status === "applied" ? texts.applied : "";
    restart.hidden = ["pending", "applying"].includes(data.status);
    switch (data.status) {
      case "pending": setProgress(Math.max(Number(bar.value), 0), "check"); break;
      case "applying": setProgress(Math.max(Number(bar.value), 50), "apply"); break;
      case "previewed": setProgress(50, "checked"); break;
      case "invalid": setProgress(Number(bar.value) >= 50 ? Number(bar.value) : 50, "invalid"); break;
      case "applied": setProgress(100, "applied"); break;
      case "failed": setProgress(Number(bar.value), "failed"); break;
      default: break;
    }
    if (waiting === "check" && CHECK_DONE.has(data.status)) stopWatching();
    if (waiting === "apply" && APPLY_DONE.has(data.status)) stopWatching();
    if (!waiting && (data.status === "pending" || data.status === "applying")) watch(data.status === "pending" ? "check" : "apply");
  }

  function reset() {
    stopWatching();
    job = null;
    early.clear();
    bar.dataset.seen = "";
    setProgress(0, "upload");
    status.hidden = true;
    preview.hidden = true;
    errorsBox.hidden = true;
    history.replaceState(null, "", location.pathname);
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    uploadError.hidden = true;
    const body = new FormData();
    const chosen = [];
    for (const name of ["departments", "users"]) {
      const file = form.elements[name].files[0];
      if (!file) continue;
      if (file.size > maxBytes) {
        uploadError.textContent = fmt(texts.too_large, { name: file.name, mb: Math.floor(maxBytes / 1048576) });
        uploadError.hidden = false;
        return;
      }
      body.append(name, file);
      chosen.push(file);
    }
    if (!chosen.length) { uploadError.textContent = texts.no_file; uploadError.hidden = false; return; }
    if (form.elements.full_sync.checked) body.append("full_sync", "true");
    reset();
    status.hidden = false;
    restart.hidden = true;
    setProgress(0, "upload");
    const button = document.getElementById("import-upload");
    busy(button, true);
    watch("check");
    try {
      const response = await fetch(`/${org}/api/directory/imports/`, {
        method: "POST", body, credentials: "same-origin", headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
      });
      const data = await response.json().catch(() => ({}));
      if (!response.ok) throw Object.assign(new Error(data.message || response.statusText), { body: data });
      job = data.id;
      history.replaceState(null, "", `?job=${job}`);
      for (const data of early.get(job) || []) progressFor(data);
      early.clear();
      show(data);
    } catch (err) {
      stopWatching();
      status.hidden = true;
      uploadError.textContent = fmt(texts.failed, { message: errorMessage(err) });
      uploadError.hidden = false;
    } finally {
      busy(button, false);
    }
  });

  confirmButton.addEventListener("click", async () => {
    busy(confirmButton, true);
    setProgress(50, "apply");
    watch("apply");
    try {
      show(await api(`directory/imports/${job}/`, { method: "POST" }));
    } catch (err) {
      stopWatching();
      phaseText.textContent = fmt(texts.failed, { message: errorMessage(err) });
    } finally {
      busy(confirmButton, false);
    }
  });

  restart.addEventListener("click", () => {
    reset();
    form.reset();
    form.elements.departments.focus();
  });

  // Opened with ?job=…: show that import as it stands now.
  if (page.dataset.job) {
    job = Number(page.dataset.job);
    refresh();
  }
}

setUpSearch();
setUpPerson();
setUpDepartments();
setUpImport();
