// Disaster information: renders JMA reports from the page's data and from live `jma.report` events.
import { onEvent } from "./app.js";

const list = document.getElementById("reports");
const labels = Object.fromEntries(
  [...document.getElementById("report-labels").content.querySelectorAll("[data-k]")].map((e) => [e.dataset.k, e.textContent]),
);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

function chips(items, heading, cls, text) {
  const wrap = el("section", { class: "report-part" }, el("h3", {}, heading));
  const ul = el("ul", { class: "chips" });
  for (const item of items) {
    ul.append(el("li", { class: `chip ${cls(item)}` }, el("span", {}, item.name), " ", el("b", {}, text(item))));
  }
  wrap.append(ul);
  return wrap;
}

export function renderReport(r) {
  const classes = ["report", `report-${r.kind}`];
  if (r.is_drill) classes.push("report-drill");
  if (r.info_type === "取消") classes.push("report-cancelled");
  const li = el("li", { class: classes.join(" "), "data-id": String(r.id) });
  const head = el("header", { class: "report-head" });
  if (r.status === "訓練") head.append(el("span", { class: "badge badge-drill" }, `⚑ ${labels.drill}`));
  if (r.status === "試験") head.append(el("span", { class: "badge badge-drill" }, `⚑ ${labels.test}`));
  if (r.info_type === "取消") head.append(el("span", { class: "badge badge-cancel" }, `✕ ${labels.cancel}`));
  if (r.info_type === "訂正") head.append(el("span", { class: "badge" }, `✎ ${labels.correction}`));
  head.append(el("strong", { class: "report-title" }, r.title), el("time", { datetime: r.report_datetime || "" }, r.report_time || ""));
  li.append(head);
  if (r.headline) li.append(el("p", { class: "report-headline" }, r.headline));
  if (r.kind === "earthquake" && r.info_type !== "取消") {
    const facts = el("dl", { class: "facts" });
    if (r.epicenter) facts.append(el("dt", {}, labels.epicenter), el("dd", {}, r.epicenter));
    if (r.magnitude) facts.append(el("dt", {}, labels.magnitude), el("dd", {}, r.magnitude));
    if (r.max_intensity) facts.append(el("dt", {}, labels.maxint), el("dd", { class: "intensity" }, r.max_intensity_label));
    if (facts.childNodes.length) li.append(facts);
    if (r.prefs?.length) li.append(chips(r.prefs, labels.intensity, (p) => `int-${p.rank}`, (p) => p.label));
  }
  if (r.tsunami?.length) li.append(chips(r.tsunami, labels.tsunami, (t) => `tsunami-${t.severity}`, (t) => t.kind_name));
  if (r.special?.length) li.append(chips(r.special, labels.special, () => "special", (s) => s.kinds.join("・")));
  return li;
}

function add(r, { fresh = false } = {}) {
  if (list.querySelector(`[data-id="${r.id}"]`)) return;
  document.getElementById("reports-empty")?.remove();
  const li = renderReport(r);
  if (fresh) li.classList.add("report-new");
  // Newest first, by the time JMA issued it; a late arrival of an older report goes in its place.
  const later = [...list.children].find((c) => (c.querySelector("time")?.getAttribute("datetime") || "") < (r.report_datetime || ""));
  list.insertBefore(li, later || null);
}

for (const r of JSON.parse(document.getElementById("reports-data").textContent)) add(r);
onEvent("jma.report", (frame) => add(frame.data, { fresh: true }));
onEvent("snapshot:jma", (frame) => { for (const r of frame.data.reports || []) add(r); });
