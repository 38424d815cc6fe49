// The dashboard. Every string that came from a log line is inserted with textContent (never
// innerHTML), so an attacker's request is shown as text and never runs.
"use strict";

const state = { csrf: "", since: "1h", filter: "", pinned: null, live: [] };
const MAX_LIVE = 200;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

async function api(path) {
  const r = await fetch(path, { credentials: "same-origin" });
  if (r.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

function sevCell(s) { return el("td", s, "sev sev-" + s); }

function row(d) {
  const tr = el("tr");
  tr.appendChild(el("td", (d.event_time || "").replace("T", " ").replace("Z", "")));
  tr.appendChild(sevCell(d.rule && d.rule.severity));
  const rule = el("td", d.rule && d.rule.id, "link");
  rule.addEventListener("click", () => pin({ rule: d.rule.id }));
  tr.appendChild(rule);
  const ip = (d.fields && d.fields.client_ip) || "";
  const ipCell = el("td", ip, ip ? "link" : "");
  if (ip) ipCell.addEventListener("click", () => pin({ ip }));
  tr.appendChild(ipCell);
  const f = d.fields || {};
  const what = el("td", f.request || f.path || d.line || "", "link");
  what.addEventListener("click", () => showDetail(d));
  tr.appendChild(what);
  return tr;
}

function matches(d) {
  if (!state.filter) return true;
  const f = state.filter.toLowerCase();
  const fields = d.fields || {};
  return [d.rule && d.rule.id, fields.client_ip, fields.path, fields.request, d.line]
    .some((v) => typeof v === "string" && v.toLowerCase().includes(f));
}

function drawFeed(list) {
  const body = document.getElementById("feed");
  body.replaceChildren(...list.filter(matches).map(row));
}

function showDetail(d) {
  const pre = document.getElementById("detail");
  pre.textContent = JSON.stringify(d, null, 2);
  pre.hidden = false;
}

async function pin(what) {
  state.pinned = what;
  const q = what.ip ? "ip=" + encodeURIComponent(what.ip) : "rule=" + encodeURIComponent(what.rule);
  document.getElementById("feed-title").textContent = what.ip ? "Attacker " + what.ip : "Rule " + what.rule;
  document.getElementById("back").hidden = false;
  const rows = await api("/api/detections?limit=500&" + q);
  // The history is written in batches: the newest detections may still be only in the feed.
  const seen = new Set(rows.map((r) => r.key));
  const recent = state.live.filter((d) => pinnedMatch(d) && !seen.has(d.key));
  drawFeed(recent.concat(rows));
}

function pinnedMatch(d) {
  const p = state.pinned;
  if (!p) return true;
  return p.ip ? (d.fields && d.fields.client_ip) === p.ip : (d.rule && d.rule.id) === p.rule;
}

function unpin() {
  state.pinned = null;
  document.getElementById("feed-title").textContent = "Live feed";
  document.getElementById("back").hidden = true;
  document.getElementById("detail").hidden = true;
  drawFeed(state.live);
}

function drawTop(id, list, onClick) {
  const body = document.getElementById(id);
  body.replaceChildren(...list.map((t) => {
    const tr = el("tr");
    const name = el("td", t.name, "link");
    name.addEventListener("click", () => onClick(t.name));
    tr.appendChild(name);
    tr.appendChild(el("td", t.detections));
    tr.appendChild(sevCell(t.severity));
    return tr;
  }));
}

async function refreshTop() {
  const t = await api("/api/top?since=" + encodeURIComponent(state.since));
  drawTop("attackers", t.attackers, (ip) => pin({ ip }));
  drawTop("rules", t.rules, (rule) => pin({ rule }));
  // The server counts per bucket of period/60 (at least a minute), aligned on multiples of
  // the bucket; empty buckets are not sent, so lay them out here.
  const period = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3 }[state.since] || 3600e3;
  const size = Math.max(Math.floor(period / 60), 60e3);
  const now = Date.now();
  const first = Math.floor((now - period) / size) * size;
  const counts = new Array(Math.ceil((now - first) / size)).fill(0);
  for (const [start, n] of t.timeline) {
    const i = Math.floor((start - first) / size);
    if (i >= 0 && i < counts.length) counts[i] += n;
  }
  const max = Math.max(1, ...counts);
  const tl = document.getElementById("timeline");
  tl.replaceChildren(...counts.map((n, i) => {
    const bar = el("div");
    bar.style.height = Math.round((100 * n) / max) + "%";
    bar.title = new Date(first + i * size).toISOString() + ": " + n;
    return bar;
  }));
}

function arrow(a, b, fmt) {
  const f = (v) => (v === null || v === undefined ? "–" : fmt(v));
  return a === b ? f(b) : f(a) + " → " + f(b);
}

async function refreshWebroot() {
  const rows = await api("/api/webroot/changes?limit=50");
  document.getElementById("webroot-panel").hidden = rows.length === 0;
  document.getElementById("webroot").replaceChildren(...rows.map((c) => {
    const tr = el("tr");
    tr.appendChild(el("td", (c.at || "").replace("T", " ").slice(0, 19)));
    tr.appendChild(el("td", c.change));
    tr.appendChild(el("td", c.old_path ? c.old_path + " → " + c.path : c.path));
    tr.appendChild(el("td", arrow(c.old_size, c.size, String)));
    tr.appendChild(el("td", arrow(c.old_sha256, c.sha256, (h) => h.slice(0, 12))));
    tr.appendChild(el("td", c.reported ? "yes" : "no: " + (c.note || "")));
    return tr;
  }));
}

async function refreshHealth() {
  const h = document.getElementById("health");
  try {
    const s = await api("/api/status");
    const reload = s.last_reload;
    const bad = reload && !reload.ok;
    h.className = "health" + (bad ? " bad" : "");
    h.textContent = "lines " + s.lines + " · unparsed " + s.unparsed + " · detections " + s.detections_written +
      " · rules " + s.rules + (bad ? " · last reload FAILED: " + (reload.errors || []).join(" ") : "") +
      (s.action_failure ? " · action failing: " + s.action_failure.action : "");
  } catch (e) {
    h.className = "health bad";
    h.textContent = "no status: " + e.message;
  }
}

function connect() {
  const es = new EventSource("/api/events");
  es.addEventListener("detections", (ev) => {
    let list;
    try { list = JSON.parse(ev.data); } catch (_) { return; }
    if (!Array.isArray(list)) return;
    const body = document.getElementById("feed");
    for (const d of list) {
      state.live.unshift(d);
      if (pinnedMatch(d) && matches(d)) body.insertBefore(row(d), body.firstChild);
    }
    if (state.live.length > MAX_LIVE) state.live.length = MAX_LIVE;
    while (body.children.length > MAX_LIVE) body.removeChild(body.lastChild);
  });
}

async function start() {
  const s = await api("/api/session");
  state.csrf = s.csrf;
  document.getElementById("logout").addEventListener("click", async () => {
    await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": state.csrf }, credentials: "same-origin" });
    location.href = "/login";
  });
  document.getElementById("filter").addEventListener("input", (e) => {
    state.filter = e.target.value;
    if (!state.pinned) drawFeed(state.live);
  });
  document.getElementById("back").addEventListener("click", unpin);
  for (const b of document.querySelectorAll("#periods button")) {
    b.addEventListener("click", () => {
      state.since = b.dataset.since;
      for (const o of document.querySelectorAll("#periods button")) o.classList.toggle("active", o === b);
      refreshTop();
    });
  }
  // Listen first, then read the history: a detection made while the history loads arrives
  // through the feed, and one already written is not shown twice.
  connect();
  const history = await api("/api/detections?limit=" + MAX_LIVE);
  const seen = new Set(state.live.map((d) => d.key));
  state.live = state.live.concat(history.filter((d) => !seen.has(d.key))).slice(0, MAX_LIVE);
  if (!state.pinned) drawFeed(state.live);
  refreshTop();
  refreshHealth();
  refreshWebroot();
  setInterval(refreshWebroot, 10000);
  setInterval(refreshTop, 10000);
  setInterval(refreshHealth, 5000);
}

document.addEventListener("DOMContentLoaded", () => { start().catch((e) => console.error(e)); });
