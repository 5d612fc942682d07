// SPDX-License-Identifier: MIT
// The status page's behaviour: polls /api/jobs every two seconds and
// /api/history every minute, and draws the table and two SVG charts.
// Every value from the server goes into the page as text (textContent,
// SVG attributes), never as markup: job names are users' text.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const k in attrs) e.setAttribute(k, String(attrs[k]));
  return e;
}

// Binary units, as mergectl prints them.
function size(b) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return (i === 0 ? b.toFixed(0) : b.toFixed(1)) + " " + units[i];
}

function duration(s) {
  if (!(s >= 0)) return "";
  if (s < 10) return s.toFixed(1) + "s";
  s = Math.round(s);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" +
    String(s % 60).padStart(2, "0") + "s";
  return Math.floor(s / 3600) + "h" +
    String(Math.floor(s / 60) % 60).padStart(2, "0") + "m";
}

function jobRow(j) {
  const tr = el("tr");
  tr.dataset.id = j.id;
  tr.appendChild(el("td", "num", String(j.id)));
  tr.appendChild(el("td", "user", j.user));
  tr.appendChild(el("td", "name", j.name));
  tr.appendChild(el("td", "state state-" + j.state, j.state));
  const pct = j.bytes_total > 0 ? 100 * j.bytes_done / j.bytes_total :
    (j.state === "done" ? 100 : 0);
  const td = el("td", "progress-col");
  const bar = el("div", "bar" + (j.state === "done" ? " done" : ""));
  const fill = el("span");
  fill.style.width = pct.toFixed(1) + "%";
  bar.appendChild(fill);
  td.appendChild(bar);
  td.appendChild(el("span", "pct", pct.toFixed(0) + "%"));
  tr.appendChild(td);
  const rate = j.state === "running" && j.elapsed > 0 ?
    j.bytes_done / j.elapsed : 0;
  tr.appendChild(el("td", "num hide-narrow", rate > 0 ? size(rate) + "/s" :
    ""));
  // No ETA before 1%: extrapolated from the first bytes, it is noise.
  tr.appendChild(el("td", "num", j.state === "running" && pct >= 1 &&
    j.eta >= 0 ? duration(j.eta) : ""));
  tr.appendChild(el("td", "num hide-narrow", j.memory > 0 ?
    size(j.memory) : ""));
  tr.appendChild(el("td", "num hide-narrow", j.elapsed > 0 ?
    duration(j.elapsed) : ""));
  let info = j.reason || "";
  if (j.position > 0) info = "position " + j.position + "; " + info;
  tr.appendChild(el("td", "info", info));
  return tr;
}

function drawJobs(data) {
  const d = data.daemon;
  document.getElementById("health").textContent = d.server + ", up " +
    duration(d.uptime) + "; memory " + size(d.memory_used) + " of " +
    size(d.memory_budget) + "; " + d.running + " running (at most " +
    d.max_running + "), " + d.queued + " queued";
  const body = document.getElementById("jobs-body");
  body.replaceChildren();
  if (data.jobs.length === 0) {
    const tr = el("tr", "empty");
    const td = el("td", "", "no jobs yet");
    td.colSpan = 10;
    tr.appendChild(td);
    body.appendChild(tr);
  }
  // Newest first: what is running and waiting, then what ended.
  for (const j of data.jobs.slice().reverse()) body.appendChild(jobRow(j));
  const by = d.by_state || {};
  document.getElementById("summary").textContent = Object.keys(by)
    .filter((k) => by[k] > 0).map((k) => by[k] + " " + k).join(", ");
}

function axes(svg, w, h, pad, top) {
  svg.appendChild(svgEl("line", { x1: pad, y1: h - pad, x2: w - 4,
    y2: h - pad, class: "axis" }));
  svg.appendChild(svgEl("line", { x1: pad, y1: 8, x2: pad, y2: h - pad,
    class: "axis" }));
  const t = svgEl("text", { x: 2, y: 16, class: "label" });
  t.textContent = top;
  svg.appendChild(t);
}

// Memory in use against the budget, the last six hours of samples.
function drawMemory(h) {
  const svg = document.getElementById("memory-chart");
  const W = 600, H = 200, P = 40;
  svg.replaceChildren();
  const now = h.now, from = now - 6 * 3600;
  const s = h.samples.filter((x) => x[0] >= from);
  const budget = s.reduce((m, x) => Math.max(m, x[2]), h.budget || 1);
  axes(svg, W, H, P, size(budget));
  const x = (t) => P + (W - P - 4) * (t - from) / (now - from);
  const y = (v) => H - P - (H - P - 8) * v / budget;
  if (s.length > 0) {
    let d = "M" + x(s[0][0]).toFixed(1) + " " + y(0).toFixed(1);
    for (const p of s) d += " L" + x(p[0]).toFixed(1) + " " +
      y(p[1]).toFixed(1);
    d += " L" + x(s[s.length - 1][0]).toFixed(1) + " " + y(0).toFixed(1) +
      " Z";
    svg.appendChild(svgEl("path", { d: d, class: "used" }));
  }
  svg.appendChild(svgEl("line", { x1: P, y1: y(h.budget), x2: W - 4,
    y2: y(h.budget), class: "budget" }));
  for (const [t, label, anchor] of [[from, "-6h", "start"],
    [now - 3 * 3600, "-3h", "middle"], [now, "now", "end"]]) {
    const e = svgEl("text", { x: x(t), y: H - P + 16, class: "label",
      "text-anchor": anchor });
    e.textContent = label;
    svg.appendChild(e);
  }
}

// Done and failed jobs per day, the last seven days.
function drawDays(h) {
  const svg = document.getElementById("days-chart");
  const W = 600, H = 200, P = 40;
  svg.replaceChildren();
  const days = h.per_day;
  const most = days.reduce((m, d) => Math.max(m, d.done + d.failed), 1);
  axes(svg, W, H, P, String(most));
  const bw = (W - P - 8) / Math.max(days.length, 1);
  // Room above the tallest bar for its count.
  const room = H - P - 22;
  days.forEach((d, i) => {
    const x = P + 4 + i * bw;
    const hd = room * d.done / most;
    const hf = room * d.failed / most;
    svg.appendChild(svgEl("rect", { x: x, y: H - P - hd, width: bw * 0.7,
      height: hd, class: "day-done" }));
    svg.appendChild(svgEl("rect", { x: x, y: H - P - hd - hf,
      width: bw * 0.7, height: hf, class: "day-failed" }));
    const t = svgEl("text", { x: x, y: H - P + 16, class: "label" });
    t.textContent = d.day.slice(5);
    svg.appendChild(t);
    const c = svgEl("text", { x: x, y: H - P - hd - hf - 4,
      class: "label" });
    c.textContent = String(d.done + d.failed);
    svg.appendChild(c);
  });
}

async function poll(path, draw) {
  try {
    const r = await fetch(path, { cache: "no-store" });
    if (!r.ok) throw new Error(path + ": " + r.status);
    draw(await r.json());
  } catch (e) {
    document.getElementById("health").textContent =
      "cannot reach the daemon (" + e.message + "); retrying";
  }
}

function start() {
  const jobs = () => poll("/api/jobs", drawJobs);
  const history = () => poll("/api/history", (h) => {
    drawMemory(h);
    drawDays(h);
  });
  jobs();
  history();
  setInterval(jobs, 2000);
  setInterval(history, 60000);
}

start();
