// rankloop serve: search, click logging, document view and stats. Plain DOM, no libraries.
// Every piece of server data reaches the page through textContent / createElement, never HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const INTERLEAVE = "interleave";
const COLORS = ["#1f5fbf", "#c2410c", "#15803d", "#7e22ce", "#be123c", "#0e7490"];
const DASHES = ["", "6 3", "2 3", "8 3 2 3", "1 2", "10 4"];
const state = { impression: null, opener: null, opening: false };

/** Element helper: el("td", {className: "x"}, "text", child, ...). */
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

/** fetch JSON; throws an Error carrying the server's `detail` on a non-2xx answer. */
async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new Error("Cannot reach the server (" + e.message + ")");
  }
  const data = await resp.json().catch(() => null);
  if (!resp.ok) throw new Error(detailText(data, resp));
  return data;
}

function detailText(data, resp) {
  const d = data && data.detail;
  if (Array.isArray(d)) {  // FastAPI validation errors: [{loc, msg, type}, ...]
    return d.map((e) => (e && e.msg ? e.msg : JSON.stringify(e))).join("; ");
  }
  if (typeof d === "string" && d) return d;
  return "Request failed: " + resp.status + " " + resp.statusText;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function setStatus(message) { $("status").textContent = message; }

// ---- setup ------------------------------------------------------------------------------------

async function init() {
  $("search-form").addEventListener("submit", onSearch);
  $("back").addEventListener("click", backToResults);
  $("refresh").addEventListener("click", refreshStats);
  $("results").addEventListener("click", onResultClick);
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && !$("doc-view").hidden) backToResults();
  });
  try {
    const health = await api("/api/health");
    fillPipelines(health);
    const learner = health.learner ? " · learner: " + health.learner : "";
    const name = String(health.dataset).replace(/\/+$/, "").split("/").pop();
    $("dataset").textContent = name + " · " + health.docs + " documents" + learner;
    $("dataset").title = health.dataset;
  } catch (e) {
    $("dataset").textContent = "Server unavailable";
    showError(e.message);
  }
  $("q").focus();
  refreshStats();
}

function fillPipelines(health) {
  const select = $("pipeline");
  select.replaceChildren();
  for (const name of health.pipelines || []) {
    select.append(el("option", { value: name }, name));
  }
  if (health.default) select.value = health.default;
  const pair = health.interleave;
  if (Array.isArray(pair) && pair.length === 2) {
    const opt = el("option", { value: INTERLEAVE }, "interleave " + pair[0] + " vs " + pair[1]);
    opt.dataset.a = pair[0];
    opt.dataset.b = pair[1];
    select.append(opt);
  }
}

// ---- search -----------------------------------------------------------------------------------

async function onSearch(ev) {
  ev.preventDefault();
  const opt = $("pipeline").selectedOptions[0];
  const body = { query: $("q").value, k: 10 };
  if (opt && opt.dataset.a !== undefined) body.interleave = [opt.dataset.a, opt.dataset.b];
  else if (opt) body.pipeline = opt.value;
  const button = $("search-button");
  button.disabled = true;
  showError("");
  setStatus("Searching…");
  try {
    const res = await api("/api/search", body);
    renderResults(res);
  } catch (e) {
    setStatus("");
    showError(e.message);
  } finally {
    button.disabled = false;
  }
}

function renderResults(res) {
  state.impression = res.impression_id;
  showView("results");
  const list = $("results");
  list.replaceChildren();
  list.dataset.impression = res.impression_id;
  for (const r of res.results) {
    const link = el("a", { href: "#doc-" + encodeURIComponent(r.doc_id), className: "title" },
      r.title || r.doc_id);
    link.dataset.docId = r.doc_id;
    const item = el("li", { className: "result" }, el("h3", {}, link),
      el("p", { className: "snippet" }, r.snippet || ""));
    item.dataset.docId = r.doc_id;
    item.dataset.position = r.position;
    if (r.team !== null && r.team !== undefined) item.dataset.team = r.team;  // never shown
    list.append(item);
  }
  const n = res.results.length;
  const took = typeof res.took_ms === "number" ? " in " + res.took_ms.toFixed(1) + " ms" : "";
  $("results-meta").textContent = n
    ? n + " results for “" + res.query + "” (" + res.pipeline + ")" + took
    : "No results for “" + res.query + "”";
  setStatus(n ? n + " results" : "No results");
}

// ---- opening a result: log the click (acknowledged), then show the document ------------------------

async function onResultClick(ev) {
  const link = ev.target.closest("a.title");
  if (!link) return;
  ev.preventDefault();
  if (state.opening) return;  // one click per activation, even on a double click
  state.opening = true;
  const docId = link.dataset.docId;
  state.opener = link;
  showError("");
  setStatus("Opening…");
  try {
    try {
      await api("/api/click", { impression_id: state.impression, doc_id: docId });
    } catch (e) {
      showError("The click was not recorded: " + e.message);
    }
    const doc = await api("/api/doc?id=" + encodeURIComponent(docId));
    $("doc-title").textContent = doc.title || doc.doc_id;
    $("doc-id").textContent = "Document " + doc.doc_id;
    $("doc-text").textContent = doc.text || "";
    showView("doc");
    $("doc-title").focus();
    setStatus("Showing document " + doc.doc_id);
  } catch (e) {
    setStatus("");
    showError(e.message);
  } finally {
    state.opening = false;
  }
  refreshStats();
}

function backToResults() {
  showView("results");
  setStatus("");
  if (state.opener && state.opener.isConnected) state.opener.focus();
}

function showView(which) {
  $("doc-view").hidden = which !== "doc";
  $("results-view").hidden = which !== "results";
}

// ---- stats ------------------------------------------------------------------------------------

async function refreshStats() {
  try {
    const stats = await api("/api/stats");
    $("stats-summary").textContent =
      stats.impressions + " impressions, " + stats.clicks + " clicks";
    renderCtr(stats.ctr_by_pipeline || {});
    renderInterleaving(stats.interleaving || {});
  } catch (e) {
    $("stats-summary").textContent = "Stats unavailable: " + e.message;
  }
}

const pct = (x) => (typeof x === "number" && isFinite(x) ? (100 * x).toFixed(1) + "%" : "–");

function renderCtr(byPipeline) {
  const names = Object.keys(byPipeline);
  $("ctr-table").tBodies[0].replaceChildren(...names.map((name) => {
    const s = byPipeline[name];
    return el("tr", {}, el("th", { scope: "row" }, name), el("td", {}, s.impressions),
      el("td", {}, s.clicked_impressions), el("td", {}, s.clicks), el("td", {}, pct(s.ctr)));
  }));
  $("legend").replaceChildren(...names.map((name, i) => {
    const swatch = el("span", { className: "swatch" });
    swatch.style.borderTopColor = COLORS[i % COLORS.length];
    swatch.style.borderTopStyle = DASHES[i % DASHES.length] ? "dashed" : "solid";
    return el("li", {}, swatch, name);
  }));
  $("chart").replaceChildren(lineChart(names.map((name) => ({
    name,
    points: (byPipeline[name].series || []).filter((p) => p[1] > 0).map((p) => [p[0], p[2] / p[1]]),
  }))));
}

/** A small SVG line chart of CTR (0..max) over time, one line (and dash pattern) per series. */
function lineChart(series) {
  const W = 560, H = 180, L = 44, R = 12, T = 10, B = 26;
  const svg = document.createElementNS(SVG, "svg");
  const attrs = (node, a) => { for (const k in a) node.setAttribute(k, a[k]); return node; };
  const add = (tag, a, text) => {
    const node = attrs(document.createElementNS(SVG, tag), a);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  attrs(svg, { viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart-svg" });
  const all = series.flatMap((s) => s.points);
  svg.setAttribute("aria-label", all.length
    ? "CTR over time for " + series.map((s) => s.name).join(", ") + "; values in the table below"
    : "No impressions yet");
  if (!all.length) {
    add("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" }, "No impressions yet");
    return svg;
  }
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  const yMax = Math.max(0.1, ...all.map((p) => p[1]));
  const x = (t) => (t1 === t0 ? (L + W - R) / 2 : L + ((t - t0) / (t1 - t0)) * (W - L - R));
  const y = (v) => H - B - (v / yMax) * (H - T - B);
  for (const v of [0, yMax / 2, yMax]) {
    add("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" });
    add("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" },
      Math.round(100 * v) + "%");
  }
  const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  add("text", { x: L, y: H - 6, class: "axis" }, clock(t0));
  if (t1 !== t0) add("text", { x: W - R, y: H - 6, "text-anchor": "end", class: "axis" }, clock(t1));
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const color = COLORS[i % COLORS.length];
    const pts = s.points.map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" ");
    add("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 2,
      "stroke-dasharray": DASHES[i % DASHES.length] });
    for (const p of s.points) {
      const dot = add("circle", { cx: x(p[0]), cy: y(p[1]), r: 3, fill: color });
      dot.append(Object.assign(document.createElementNS(SVG, "title"),
        { textContent: s.name + " " + clock(p[0]) + ": " + pct(p[1]) }));
    }
  });
  return svg;
}

function renderInterleaving(pairs) {
  const body = $("interleaving-table").tBodies[0];
  const names = Object.keys(pairs);
  if (!names.length) {
    body.replaceChildren(el("tr", {}, el("td", { colSpan: 6 }, "No interleaved impressions yet")));
    return;
  }
  body.replaceChildren(...names.map((name) => {
    const o = pairs[name];
    const ci = Array.isArray(o.ci) ? pct(o.ci[0]) + " – " + pct(o.ci[1]) : "–";
    return el("tr", {}, el("th", { scope: "row" }, name), el("td", {}, o.wins_a),
      el("td", {}, o.wins_b), el("td", {}, o.ties), el("td", {}, pct(o.win_rate_b)),
      el("td", {}, ci));
  }));
}

document.addEventListener("DOMContentLoaded", init);
