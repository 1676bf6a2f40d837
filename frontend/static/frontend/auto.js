// Automatic dispatch pages: small helps on top of forms that work without scripts. The rule form and the
// verify form show only the parts of the chosen hazard; the rule form gains "choose all / clear" for the
// prefectures, a search that adds places to the areas box, and a person search that adds login IDs; verify
// offers the municipalities of the chosen prefecture. Texts come translated (#auto-texts).
import { api } from "./app.js";

const D = readJson("auto-data");
const T = readJson("auto-texts");

function readJson(id) {
  const node = document.getElementById(id);
  try { return node ? JSON.parse(node.textContent) : {}; } catch { return {}; }
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

// --- Parts by hazard ------------------------------------------------------------------------------------------

function byHazard(form) {
  form.classList.add("js");
  const apply = () => {
    const hazard = form.querySelector('input[name="hazard"]:checked')?.value || "earthquake";
    form.dataset.hazard = hazard;
    for (const part of form.querySelectorAll("[data-hazard]")) {
      if (part === form) continue;
      part.classList.toggle("shown", part.dataset.hazard === hazard);
    }
    form.dispatchEvent(new CustomEvent("hazard", { detail: hazard }));
  };
  for (const radio of form.querySelectorAll('input[name="hazard"]')) radio.addEventListener("change", apply);
  apply();
}

// --- The rule form --------------------------------------------------------------------------------------------

function lines(textarea) {
  return textarea.value.split("\n").map((l) => l.trim()).filter(Boolean);
}

function appendLine(textarea, code, line) {
  const present = lines(textarea).some((l) => l.split(/[\s,、，]+/)[0] === code);
  if (!present) {
    textarea.value = [...lines(textarea), line].join("\n");
    textarea.dispatchEvent(new Event("input"));
  }
}

function initRuleForm(form) {
  byHazard(form);

  // Prefectures: all or none.
  const pickAll = form.querySelector(".pick-all");
  if (pickAll) {
    pickAll.hidden = false;
    for (const button of pickAll.querySelectorAll("button")) {
      button.addEventListener("click", () => {
        for (const box of form.querySelectorAll('input[name="prefectures"]')) box.checked = button.dataset.all === "on";
      });
    }
  }

  // Who: the departments and people matter only for "chosen".
  const chosen = document.getElementById("chosen-fields");
  const target = () => {
    chosen.hidden = form.querySelector('input[name="target_mode"]:checked')?.value !== "chosen";
  };
  for (const radio of form.querySelectorAll('input[name="target_mode"]')) radio.addEventListener("change", target);
  target();

  // The areas box: a search over the chosen hazard's places.
  const areas = document.getElementById("f-areas");
  const picker = document.getElementById("area-picker");
  const query = document.getElementById("area-q");
  const found = document.getElementById("area-found");
  const shown = () => {
    const q = query.value.trim();
    const hazard = form.dataset.hazard;
    found.replaceChildren();
    if (!q) return;
    const have = new Set(lines(areas).map((l) => l.split(/[\s,、，]+/)[0]));
    const rows = (D.areas?.[hazard] || []).filter(([code, name]) => code.startsWith(q) || name.includes(q)).slice(0, 40);
    if (!rows.length) { found.append(el("li", { class: "empty", text: T.no_area })); return; }
    for (const [code, name] of rows) {
      const added = have.has(code);
      found.append(el("li", {},
        el("span", { class: "who" }, el("code", { text: code }), ` ${name}`),
        el("button", { type: "button", disabled: added, text: added ? T.added : T.add, onclick: (event) => {
          appendLine(areas, code, `${code} ${name}`);
          event.currentTarget.disabled = true;
          event.currentTarget.textContent = T.added;
        } })));
    }
  };
  picker.hidden = false;
  query.addEventListener("input", debounce(shown, 150));
  form.addEventListener("hazard", () => { shown(); chips(); });

  // The places in the box, by name, as they are typed or added.
  const chipList = document.getElementById("areas-shown");
  const chips = () => {
    const names = new Map(D.areas?.[form.dataset.hazard] || []);
    const codes = [...new Set(lines(areas).map((l) => l.split(/[\s,、，]+/)[0]).filter((c) => /^[0-9]+$/.test(c)))];
    chipList.replaceChildren(...codes.map((code) => el("li", { class: "chip" },
      el("span", {}, el("code", { text: code }), ` ${names.get(code) || "?"}`))));
  };
  areas.addEventListener("input", chips);

  // People: search the directory, add login IDs.
  const people = document.getElementById("f-people");
  const peoplePicker = document.getElementById("people-picker");
  const peopleQuery = document.getElementById("people-q");
  const peopleFound = document.getElementById("people-found");
  const peopleStatus = document.getElementById("people-status");
  let asked = 0;
  const search = debounce(async () => {
    const q = peopleQuery.value.trim();
    const mine = ++asked;
    peopleFound.replaceChildren();
    if (!q) { peopleStatus.textContent = ""; return; }
    peopleStatus.textContent = T.searching;
    try {
      const rows = await api(`safety/people/?q=${encodeURIComponent(q)}`);
      if (mine !== asked) return;
      peopleStatus.textContent = rows.length ? "" : T.nobody;
      const have = new Set(lines(people).map((l) => l.split(/\s+/)[0]));
      for (const p of rows) {
        const added = have.has(p.login_id);
        peopleFound.append(el("li", {},
          el("span", { class: "who" }, p.name, el("span", { class: "sub-line",
            text: [p.department, p.safety_user ? "" : T.no_safety_id].filter(Boolean).join(" · ") })),
          el("button", { type: "button", disabled: added, text: added ? T.added : T.add, onclick: (event) => {
            appendLine(people, p.login_id, p.login_id);
            event.currentTarget.disabled = true;
            event.currentTarget.textContent = T.added;
          } })));
      }
    } catch {
      if (mine === asked) peopleStatus.textContent = T.search_failed;
    }
  }, 250);
  peoplePicker.hidden = false;
  peopleQuery.addEventListener("input", search);

  document.getElementById("form-error")?.focus();
}

// --- Verify ---------------------------------------------------------------------------------------------------

function initVerify(form) {
  byHazard(form);
  // Municipalities of the chosen prefecture, to pick one by name.
  const pref = document.getElementById("v-pref-special");
  const list = document.getElementById("v-city-list");
  const fill = () => {
    const rows = (D.areas?.special_warning || []).filter(([code]) => code.startsWith(pref.value));
    list.replaceChildren(...rows.map(([code, name]) => el("option", { value: code, label: name })));
  };
  pref.addEventListener("change", fill);
  fill();
}

const ruleForm = document.getElementById("rule-form");
if (ruleForm) initRuleForm(ruleForm);
const verifyForm = document.getElementById("verify-form");
if (verifyForm) initVerify(verifyForm);

// Stopping a dispatch on hold asks first (the log page).
document.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest("button[data-confirm]") : null;
  if (button && !window.confirm(button.dataset.confirm)) event.preventDefault();
});
