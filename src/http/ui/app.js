// The dashboard. Every string that came from a log line is inserted with textContent (never
// innerHTML), so an attacker's request is shown as text and never runs.
//
// The feed holds compact rows (what /api/events sends: key, time, rule, severity, class,
// client_ip, source, host, excerpt, cut, count, suppressed); the whole detection is fetched
// from /api/detection when a row is clicked. Detections from the history are turned into the
// same rows (keeping their raw line).
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

async function post(path, body) {
  const r = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": state.csrf },
    body: JSON.stringify(body),
  });
  if (r.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  if (!r.ok) throw new Error(path + ": " + r.status + " " + (await r.text()));
  return r.json();
}

function time(ms) {
  return ms === null || ms === undefined ? "–" : new Date(ms).toISOString().replace("T", " ").slice(0, 19);
}

// A table of rows of cells; a cell is text, or [text, onClick] for a link.
function table(head, rows) {
  const t = el("table");
  const hr = el("tr");
  for (const h of head) hr.appendChild(el("th", h));
  const thead = el("thead");
  thead.appendChild(hr);
  t.appendChild(thead);
  const body = el("tbody");
  for (const r of rows) {
    const tr = el("tr");
    for (const c of r) {
      if (Array.isArray(c)) {
        const td = el("td", c[0], "link");
        td.addEventListener("click", c[1]);
        tr.appendChild(td);
      } else {
        tr.appendChild(el("td", c));
      }
    }
    body.appendChild(tr);
  }
  t.appendChild(body);
  return t;
}

// Label/value pairs as a definition list.
function facts(pairs) {
  const dl = el("dl", null, "facts");
  for (const [k, v] of pairs) {
    if (v === undefined || v === null || v === "") continue;
    dl.appendChild(el("dt", k));
    dl.appendChild(el("dd", v));
  }
  return dl;
}

function sevCell(s) { return el("td", s, "sev sev-" + s); }

const EXCERPT = 200;

// A detection of the history (the whole object) as a row of the feed.
function compact(d) {
  const f = d.fields || {};
  const what = f.request || f.path || d.line || "";
  const r = {
    key: d.key, time: d.event_time, rule: d.rule && d.rule.id, severity: d.rule && d.rule.severity,
    class: d.rule && d.rule.class, client_ip: f.client_ip, source: d.source && d.source.name, host: f.host,
    excerpt: what.slice(0, EXCERPT), cut: what.length > EXCERPT, suppressed: d.suppressed, line: d.line,
  };
  if (d.threshold) r.count = d.threshold.count; else if (d.sequence) r.count = d.sequence.steps;
  return r;
}

function row(d) {
  const tr = el("tr");
  tr.dataset.key = d.key || "";
  tr.appendChild(el("td", (d.time || "").replace("T", " ").replace("Z", "")));
  tr.appendChild(sevCell(d.severity));
  const rule = el("td", d.rule, "link");
  rule.addEventListener("click", () => pin({ rule: d.rule }));
  tr.appendChild(rule);
  const ip = d.client_ip || "";
  const ipCell = el("td", ip, ip ? "link" : "");
  if (ip) ipCell.addEventListener("click", () => pin({ ip }));
  tr.appendChild(ipCell);
  let text = (d.excerpt || "") + (d.cut ? "…" : "");
  if (d.count) text += " (" + d.count + " events)";
  if (d.suppressed) text += " (+" + d.suppressed + " suppressed)";
  const what = el("td", text, "link");
  what.title = [d.host, d.source].filter(Boolean).join(" · ");
  what.addEventListener("click", () => showDetail(d.key));
  tr.appendChild(what);
  return tr;
}

function matches(d) {
  if (!state.filter) return true;
  const f = state.filter.toLowerCase();
  return [d.rule, d.client_ip, d.excerpt, d.host, d.source, d.line]
    .some((v) => typeof v === "string" && v.toLowerCase().includes(f));
}

function drawFeed(list) {
  const body = document.getElementById("feed");
  body.replaceChildren(...list.filter(matches).map(row));
}

// The whole detection behind a row, fetched when it is clicked (the feed carries rows only).
function fetchDetection(key) {
  return api("/api/detection?id=" + encodeURIComponent(key));
}

async function showDetail(key) {
  const pre = document.getElementById("detail");
  pre.hidden = false;
  pre.textContent = "loading…";
  try {
    pre.textContent = JSON.stringify(await fetchDetection(key), null, 2);
  } catch (e) {
    pre.textContent = "cannot show this detection: " + e.message;
  }
}

async function pin(what) {
  state.pinned = what;
  const q = what.ip ? "ip=" + encodeURIComponent(what.ip) : "rule=" + encodeURIComponent(what.rule);
  document.getElementById("feed-title").textContent = what.ip ? "Detections of " + what.ip : "Detections of " + what.rule;
  document.getElementById("back").hidden = false;
  const rows = (await api("/api/detections?limit=500&" + q)).map(compact);
  // The history is written in batches: the newest detections may still be only in the feed.
  const seen = new Set(rows.map((r) => r.key));
  const recent = state.live.filter((d) => pinnedMatch(d) && !seen.has(d.key));
  const all = recent.concat(rows);
  drawFeed(all);
  if (what.ip) await drawAttacker(what.ip, all, recent); else await drawRule(what.rule);
  document.getElementById("subject").scrollIntoView();
}

// Adds one to the count named `name` of a list of {name, detections}.
function bump(list, name, extra) {
  let e = list.find((x) => x.name === name);
  if (!e) { e = Object.assign({ name, detections: 0 }, extra); list.push(e); }
  e.detections += 1;
  return e;
}

// The attacker page: what it did, by class, rule and source, and its raw lines. `recent` are
// detections the feed brought that the history (written in batches) does not hold yet.
async function drawAttacker(ip, rows, recent) {
  const a = await api("/api/attacker?ip=" + encodeURIComponent(ip));
  for (const d of recent) {
    const ms = Date.parse(d.time);
    a.detections += 1;
    if (!a.first_ms || ms < a.first_ms) a.first_ms = ms;
    if (!a.last_ms || ms > a.last_ms) a.last_ms = ms;
    bump(a.classes, d.class);
    const r = bump(a.rules, d.rule, { severity: d.severity, last_ms: ms });
    r.last_ms = Math.max(r.last_ms || 0, ms);
    bump(a.sources, d.source);
  }
  document.getElementById("subject-title").textContent = "Attacker " + ip;
  // Rows from the history carry their raw line; those only the feed brought are fetched.
  const raw = await Promise.all(rows.slice(0, 30).map(async (d) => {
    if (typeof d.line === "string") return d.line;
    try {
      return (await fetchDetection(d.key)).line || "";
    } catch (_) {
      return d.excerpt || "";
    }
  }));
  const lines = el("pre", raw.join("\n"), "detail");
  document.getElementById("subject-body").replaceChildren(
    facts([["detections", a.detections], ["first seen", time(a.first_ms)], ["last seen", time(a.last_ms)]]),
    el("h3", "Classes"),
    table(["class", "detections"], a.classes.map((c) => [c.name, c.detections])),
    el("h3", "Rules"),
    table(["rule", "detections", "severity", "last"],
      a.rules.map((r) => [[r.name, () => pin({ rule: r.name })], r.detections, r.severity, time(r.last_ms)])),
    el("h3", "Sources"),
    table(["source", "detections"], a.sources.map((c) => [c.name, c.detections])),
    el("h3", "Raw lines (newest first)"),
    lines,
  );
  document.getElementById("subject").hidden = false;
}

// The rule page: the rule as loaded, what it cost and matched since start, its history.
async function drawRule(id) {
  const a = await api("/api/rule?rule=" + encodeURIComponent(id));
  const r = a.rule || {};
  const c = a.counts || {};
  const h = a.history;
  document.getElementById("subject-title").textContent = "Rule " + id + (r.title ? ": " + r.title : "");
  const perEval = c.evaluations ? Math.round(c.eval_nanos / c.evaluations) + " ns" : "–";
  document.getElementById("subject-body").replaceChildren(
    a.rule ? facts([
      ["severity", r.severity], ["class", r.class], ["kind", r.kind], ["threshold", r.threshold],
      ["suppress", r.suppress], ["enabled", r.enabled ? "yes" : "no"], ["actions", (r.actions || []).join(", ")],
      ["tags", (r.tags || []).join(", ")], ["file", r.file], ["last change", r.changed_at],
    ]) : el("p", "No rule with this id is loaded now; its detections remain in the history.", "hint"),
    el("p", r.description || ""),
    el("h3", "Since start"),
    facts([
      ["lines matched", c.hits], ["detections", c.detections], ["suppressed", c.suppressed],
      ["evaluations", c.evaluations], ["time evaluating", c.eval_nanos !== undefined ? (c.eval_nanos / 1e6).toFixed(1) + " ms" : ""],
      ["per evaluation", perEval],
    ]),
    el("h3", "Detections"),
    facts([["last hour", h.last_hour], ["last day", h.last_day], ["last week", h.last_week], ["last", time(h.last_ms)]]),
    el("h3", "Top attackers (week)"),
    table(["address", "detections", "severity", "last"],
      h.attackers.map((t) => [[t.name, () => pin({ ip: t.name })], t.detections, t.severity, time(t.last_ms)])),
  );
  document.getElementById("subject").hidden = false;
}

function pinnedMatch(d) {
  const p = state.pinned;
  if (!p) return true;
  return p.ip ? d.client_ip === p.ip : d.rule === p.rule;
}

function unpin() {
  state.pinned = null;
  document.getElementById("feed-title").textContent = "Live feed";
  document.getElementById("back").hidden = true;
  document.getElementById("subject").hidden = true;
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
  const pending = rows.filter((c) => c.reported && !c.accepted_by);
  document.getElementById("webroot-pending").textContent = pending.length ? pending.length + " to review" : "";
  const all = document.getElementById("accept-all");
  all.hidden = pending.length === 0;
  all.onclick = () => accept(pending.map((c) => c.id));
  document.getElementById("webroot").replaceChildren(...rows.map((c) => {
    const tr = el("tr");
    tr.appendChild(el("td", (c.at || "").replace("T", " ").slice(0, 19)));
    tr.appendChild(el("td", c.change));
    tr.appendChild(el("td", c.old_path ? c.old_path + " → " + c.path : c.path));
    tr.appendChild(el("td", arrow(c.old_size, c.size, String)));
    tr.appendChild(el("td", arrow(c.old_sha256, c.sha256, (h) => h.slice(0, 12))));
    tr.appendChild(el("td", c.reported ? "yes" : "no: " + (c.note || "")));
    const review = el("td");
    if (c.accepted_by) {
      review.textContent = "accepted by " + c.accepted_by + " " + (c.accepted_at || "").replace("T", " ").slice(0, 19);
    } else if (c.reported) {
      const b = el("button", "Accept", "accept");
      b.type = "button";
      b.dataset.id = String(c.id);
      b.addEventListener("click", () => accept([c.id]));
      review.appendChild(b);
    }
    tr.appendChild(review);
    return tr;
  }));
}

// Records that a person checked these changes (the files are already the baseline).
async function accept(ids) {
  if (!ids.length) return;
  try {
    await post("/api/webroot/accept", { ids });
  } catch (e) {
    document.getElementById("webroot-pending").textContent = "accept failed: " + e.message;
    return;
  }
  refreshWebroot();
}

// The header: per source lines/s (from two polls), unparsed lines and how long ago its last
// line came; queued and failed deliveries; the last reload and its errors.
async function refreshHealth() {
  const h = document.getElementById("health");
  try {
    const s = await api("/api/status");
    const now = Date.now();
    const prev = state.health;
    state.health = { at: now, sources: s.sources || [] };
    const parts = (s.sources || []).map((src) => {
      const p = prev && prev.sources.find((o) => o.name === src.name);
      const rate = p ? Math.max(0, (src.lines - p.lines) / ((now - prev.at) / 1000)) : null;
      const ago = src.last_event_at ? Math.round((now - Date.parse(src.last_event_at)) / 1000) + " s ago" : "no line yet";
      return src.name + ": " + (rate === null ? "…" : rate.toFixed(rate < 10 ? 1 : 0)) + " lines/s, " +
        src.unparsed + " unparsed, last " + ago;
    });
    for (const a of s.actions || []) {
      const c = a.counters || {};
      parts.push(a.action + ": " + (a.queued || 0) + " queued, " + (c.delivered || 0) + " delivered, " + (c.failed || 0) + " failed");
    }
    const reload = s.last_reload;
    const bad = reload && !reload.ok;
    parts.push("rules " + s.rules + " (loaded " + (s.rules_loaded_at || "").replace("T", " ").slice(0, 19) + ")");
    if (bad) parts.push("last reload FAILED: " + (reload.errors || []).join(" "));
    if (s.action_failure) parts.push("action failing: " + s.action_failure.action + ": " + s.action_failure.error);
    h.className = "health" + (bad || s.action_failure ? " bad" : "");
    h.textContent = parts.join(" · ");
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
  // Rows this page missed: it was too slow for the feed, or a flood exceeded what it carries.
  es.addEventListener("lagged", (ev) => {
    state.missed = (state.missed || 0) + (Number(ev.data) || 0);
    document.getElementById("feed-missed").textContent = state.missed + " detections not shown (see the history)";
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
  const history = (await api("/api/detections?limit=" + MAX_LIVE)).map(compact);
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
