(function(){
"use strict";
const D = JSON.parse(document.getElementById("report-data").textContent);
const C = D.columns.reduce((m, c, i) => (m[c] = i, m), {});
const PAGE = D.page_rows;
const LOWER = D.concepts.map((c) => c.toLowerCase());
const cardIndex = new Map(D.cards.map((k, i) => [k[0] + "\u0000" + k[1], i]));
const $ = (id) => document.getElementById(id);
const state = {filter: "", layer: "", concept: "", page: 1, sort: "", desc: false, unit: ""};
function readHash(){
  const p = new URLSearchParams(location.hash.replace(/^#/, ""));
  state.filter = p.get("filter") || ""; state.layer = p.get("layer") || "";
  state.concept = p.get("concept") || ""; state.page = Math.max(1, parseInt(p.get("page") || "1", 10) || 1);
  state.sort = p.get("sort") || ""; state.desc = p.get("desc") === "1"; state.unit = p.get("unit") || "";
}
function writeHash(){
  const p = new URLSearchParams();
  for (const k of ["filter", "layer", "concept", "sort", "unit"]) if (state[k]) p.set(k, state[k]);
  if (state.desc) p.set("desc", "1"); if (state.page > 1) p.set("page", String(state.page));
  const h = p.toString(); history.replaceState(null, "", h ? "#" + h : location.pathname + location.search);
}
function el(tag, text, cls){ const e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = String(text); if (cls) e.className = cls; return e; }
function fmt(v){ return v === null || v === undefined || v === "" ? "" : (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : String(v)); }
function conceptMatch(row, q){
  const ks = row[C.k];
  for (let i = 0; i < ks.length; i++) if (LOWER[ks[i]].includes(q)) return i;
  return -1;
}
function rows(){
  const f = state.filter.toLowerCase(), q = state.concept.toLowerCase();
  const textCols = [C.layer, C.unit, C.c1, C.c2, C.c3, C.category, C.broad, C.kind].concat(C.grounded !== undefined ? [C.grounded] : []);
  let out = [];
  for (const row of D.rows){
    if (state.layer && row[C.layer] !== state.layer) continue;
    if (f && !textCols.some((c) => String(row[c]).toLowerCase().includes(f))) continue;
    let m = -1;
    if (q){ m = conceptMatch(row, q); if (m < 0) continue; }
    out.push([row, m]);
  }
  if (state.sort && C[state.sort] !== undefined){
    const c = C[state.sort], s = state.desc ? -1 : 1;
    out.sort((a, b) => { const x = a[0][c], y = b[0][c];
      if (x === y) return 0; if (x === null || x === "") return 1; if (y === null || y === "") return -1;
      return (x < y ? -1 : 1) * s; });
  }
  return out;
}
const SHOWN = D.shown;
function render(){
  const list = rows(), pages = Math.max(1, Math.ceil(list.length / PAGE));
  state.page = Math.min(state.page, pages);
  const start = (state.page - 1) * PAGE, body = $("unit-body");
  body.replaceChildren();
  const q = state.concept;
  for (const [row, m] of list.slice(start, start + PAGE)){
    const tr = el("tr", undefined, "unit-row");
    tr.dataset.layer = row[C.layer]; tr.dataset.unit = row[C.unit];
    if (state.unit === row[C.layer] + "/" + row[C.unit]) tr.classList.add("selected");
    for (const [col, kind] of SHOWN){
      let v = row[C[col]];
      if (col === "passes" || col === "null99") v = v === null ? "" : (v ? "yes" : "no");
      const td = el("td", fmt(v), kind === "num" ? "num" : (v === "yes" ? "yes" : (v === "no" ? "no" : "")));
      tr.appendChild(td);
    }
    if (q){
      const text = m >= 0 ? "#" + (m + 1) + " " + D.concepts[row[C.k][m]] + " (" + fmt(row[C.ks][m]) + ")" : "";
      tr.insertBefore(el("td", text, "match"), tr.children[2]);
    }
    if (cardIndex.has(row[C.layer] + "\u0000" + row[C.unit])) tr.firstChild.appendChild(el("span", " \u25A3", "muted"));
    tr.addEventListener("click", () => { state.unit = row[C.layer] + "/" + row[C.unit]; showUnit(); render(); });
    body.appendChild(tr);
  }
  $("match-col").hidden = !q;
  const count = $("count");
  count.dataset.shown = String(Math.min(PAGE, Math.max(0, list.length - start)));
  count.dataset.total = String(list.length);
  count.textContent = list.length + " of " + D.rows.length + " units" + (q ? " carry a concept matching \u201c" + q + "\u201d" : "");
  $("page").textContent = "page " + state.page + " of " + pages;
  $("prev").disabled = state.page <= 1; $("next").disabled = state.page >= pages;
  for (const th of document.querySelectorAll("th.sortable")){
    th.classList.toggle("sorted-asc", th.dataset.col === state.sort && !state.desc);
    th.classList.toggle("sorted-desc", th.dataset.col === state.sort && state.desc);
  }
  writeHash();
}
function showUnit(){
  const view = $("card-view"); view.replaceChildren();
  if (!state.unit){ view.appendChild(el("p", "Click a unit in the table to see its card.", "note")); return; }
  const cut = state.unit.lastIndexOf("/"), layer = state.unit.slice(0, cut), unit = state.unit.slice(cut + 1);
  const i = cardIndex.get(layer + "\u0000" + unit);
  if (i !== undefined){ view.appendChild(document.getElementById("card-" + i).content.cloneNode(true)); return; }
  const row = D.rows.find((r) => r[C.layer] === layer && String(r[C.unit]) === unit);
  const card = el("article", undefined, "card");
  if (!row){ card.appendChild(el("p", "No unit " + state.unit + " in this run.", "note")); view.appendChild(card); return; }
  card.appendChild(el("h3", layer + " \u00b7 unit " + unit));
  card.appendChild(el("p", [row[C.category], row[C.broad], row[C.kind]].filter(Boolean).join(" \u00b7 "), "muted"));
  const ol = el("ol");
  row[C.k].slice(0, 10).forEach((c, j) => { const li = el("li", D.concepts[c] + " "); li.appendChild(el("span", fmt(row[C.ks][j]), "score")); ol.appendChild(li); });
  card.appendChild(ol);
  card.appendChild(el("p", D.no_card_note, "note"));
  view.appendChild(card);
}
function fill(){
  const sel = $("layer");
  for (const l of D.layers){ const o = el("option", l); o.value = l; sel.appendChild(o); }
  $("filter").value = state.filter; sel.value = state.layer; $("concept").value = state.concept;
}
function on(id, ev, fn){ $(id).addEventListener(ev, fn); }
readHash(); fill();
on("filter", "input", (e) => { state.filter = e.target.value; state.page = 1; render(); });
on("concept", "input", (e) => { state.concept = e.target.value.trim(); state.page = 1; render(); });
on("layer", "change", (e) => { state.layer = e.target.value; state.page = 1; render(); });
on("prev", "click", () => { state.page -= 1; render(); });
on("next", "click", () => { state.page += 1; render(); });
for (const th of document.querySelectorAll("th.sortable")) th.addEventListener("click", () => {
  if (state.sort === th.dataset.col) state.desc = !state.desc; else { state.sort = th.dataset.col; state.desc = th.dataset.kind === "num"; }
  render(); });
for (const b of document.querySelectorAll("button[data-unit]")) b.addEventListener("click", () => {
  state.unit = b.dataset.unit; showUnit(); render(); $("card-view").scrollIntoView({block: "nearest"}); });
window.addEventListener("hashchange", () => { readHash(); fill(); showUnit(); render(); });
if (!state.unit && D.cards.length) state.unit = D.cards[D.first_card][0] + "/" + D.cards[D.first_card][1];
showUnit(); render();
})();
