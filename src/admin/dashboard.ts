/**
 * The dashboard at `/`: one HTML page with inline CSS, JavaScript and SVG (no build
 * step, nothing fetched from elsewhere). The page itself holds no data; its script
 * polls the JSON API every 1.5 s, including the last hour the server keeps
 * (/api/v1/metrics/history), so a freshly opened tab shows its charts at once. With a token configured, the page asks for it once
 * and keeps it in sessionStorage for the tab.
 */
export const DASHBOARD_HTML = /* html */ `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Ferry</title>
<style>
  :root { --bg:#f4f6f8; --card:#fff; --ink:#17212b; --muted:#6b7785; --line:#e1e6eb; --accent:#1f6feb; --ok:#1a7f37; --warn:#b7791f; --bad:#cf222e; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--ink); }
  header { display:flex; align-items:center; gap:16px; padding:12px 20px; background:#17212b; color:#fff; }
  header h1 { font-size:18px; margin:0; letter-spacing:.5px; }
  header .meta { color:#aeb8c2; font-size:13px; }
  header .spacer { flex:1; }
  #status { font-size:13px; }
  #status::before { content:"●"; margin-right:6px; color:var(--muted); }
  #status.live::before { color:#3fb950; } #status.down::before { color:#f85149; }
  main { padding:16px 20px; display:grid; gap:16px; }
  .cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(180px, 1fr)); gap:12px; }
  .card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
  .card h2, section h2 { font-size:12px; text-transform:uppercase; letter-spacing:.6px; color:var(--muted); margin:0 0 6px; font-weight:600; }
  .big { font-size:28px; font-weight:650; font-variant-numeric:tabular-nums; }
  .sub { color:var(--muted); font-size:12px; font-variant-numeric:tabular-nums; }
  svg.spark { width:100%; height:40px; display:block; margin-top:6px; }
  svg.spark polyline { fill:none; stroke:var(--accent); stroke-width:1.5; vector-effect:non-scaling-stroke; }
  svg.spark path { fill:rgba(31,111,235,.12); stroke:none; }
  section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
  .two { display:grid; grid-template-columns:1fr 1fr; gap:16px; background:none; border:0; padding:0; }
  @media (max-width: 900px) { .two { grid-template-columns:1fr; } }
  table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
  th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); white-space:nowrap; }
  th { color:var(--muted); font-weight:600; font-size:12px; }
  td.topic { max-width:360px; overflow:hidden; text-overflow:ellipsis; font-family:ui-monospace, monospace; font-size:12px; }
  td.num, th.num { text-align:right; }
  .empty { color:var(--muted); padding:8px; }
  .state { padding:1px 8px; border-radius:10px; font-size:12px; background:#eef1f4; }
  .state.connected { background:#dafbe1; color:var(--ok); } .state.backoff, .state.connecting { background:#fff8c5; color:var(--warn); }
  .state.paused, .state.stopped { background:#eef1f4; color:var(--muted); }
  .bar { width:140px; height:8px; background:#eef1f4; border-radius:4px; overflow:hidden; display:inline-block; vertical-align:middle; }
  .bar > div { height:100%; background:var(--ok); width:0; transition:width .4s; }
  ul.log { list-style:none; margin:0; padding:0; max-height:320px; overflow:auto; font-family:ui-monospace, monospace; font-size:12px; }
  ul.log li { padding:4px 0; border-bottom:1px solid var(--line); }
  ul.log .lvl { display:inline-block; width:44px; font-weight:600; } ul.log .error .lvl { color:var(--bad); } ul.log .warn .lvl { color:var(--warn); }
  ul.log time { color:var(--muted); margin-right:8px; }
  svg.chart { width:100%; height:auto; display:block; }
  svg.chart .grid { stroke:var(--line); stroke-width:1; }
  svg.chart .axis { stroke:#aeb8c2; stroke-width:1; }
  svg.chart text { fill:var(--muted); font-size:11px; font-family:inherit; font-variant-numeric:tabular-nums; }
  svg.chart polyline { fill:none; stroke-width:1.8; }
  .charts { display:grid; grid-template-columns:repeat(3, 1fr); gap:16px; }
  @media (max-width: 1100px) { .charts { grid-template-columns:1fr; } }
  .legend { font-size:12px; color:var(--muted); margin:-2px 0 4px; }
  .legend .now { float:right; color:var(--ink); font-variant-numeric:tabular-nums; }
  .legend i { display:inline-block; width:10px; height:3px; margin:0 4px 3px 8px; vertical-align:middle; }
  #drain { margin:2px 0 8px; font-size:13px; }
  #drain b { font-variant-numeric:tabular-nums; }
  td.id { font-family:ui-monospace, monospace; font-size:12px; max-width:260px; overflow:hidden; text-overflow:ellipsis; }
  #login { position:fixed; inset:0; background:rgba(23,33,43,.55); display:none; align-items:center; justify-content:center; }
  #login.show { display:flex; }
  #login form { background:#fff; padding:20px; border-radius:8px; width:340px; display:grid; gap:10px; }
  #login input { padding:8px; font:inherit; border:1px solid var(--line); border-radius:6px; }
  #login button { padding:8px; font:inherit; background:var(--accent); color:#fff; border:0; border-radius:6px; cursor:pointer; }
  #login .err { color:var(--bad); font-size:12px; min-height:1em; }
</style>
</head>
<body>
<header>
  <h1>Ferry</h1>
  <span class="meta" id="identity">–</span>
  <span class="meta" id="uptime"></span>
  <span class="spacer"></span>
  <span id="status">connecting…</span>
</header>
<main>
  <div class="cards">
    <div class="card"><h2>Connections</h2><div class="big" id="connections">–</div><div class="sub" id="sockets"></div><svg class="spark" id="chart-connections" viewBox="0 0 120 40" preserveAspectRatio="none"></svg></div>
    <div class="card"><h2>Messages in / s</h2><div class="big" id="rate-in">–</div><div class="sub" id="total-in"></div><svg class="spark" id="chart-in" viewBox="0 0 120 40" preserveAspectRatio="none"></svg></div>
    <div class="card"><h2>Messages out / s</h2><div class="big" id="rate-out">–</div><div class="sub" id="total-out"></div><svg class="spark" id="chart-out" viewBox="0 0 120 40" preserveAspectRatio="none"></svg></div>
    <div class="card"><h2>Sessions</h2><div class="big" id="sessions">–</div><div class="sub" id="sessions-detail"></div><div class="sub" id="retained"></div></div>
    <div class="card"><h2>Store</h2><div class="big" id="store-bytes">–</div><div class="sub" id="store-detail"></div></div>
    <div class="card"><h2>Dropped</h2><div class="big" id="dropped">–</div><div class="sub" id="dropped-detail"></div></div>
  </div>
  <section>
    <h2>Last hour</h2>
    <div class="charts">
      <div><div class="legend">Messages / s<i style="background:#1f6feb"></i>in<i style="background:#8250df"></i>out<span class="now" id="hist-rates-now"></span></div><svg class="chart" id="hist-rates" viewBox="0 0 420 190"></svg></div>
      <div><div class="legend">Uplink backlog (messages)<i style="background:#bf8700"></i>backlog<span class="now" id="hist-backlog-now"></span></div><svg class="chart" id="hist-backlog" viewBox="0 0 420 190"></svg></div>
      <div><div class="legend">Oldest message sent, not yet acknowledged (s)<i style="background:#cf222e"></i>age<span class="now" id="hist-oldest-now"></span></div><svg class="chart" id="hist-oldest" viewBox="0 0 420 190"></svg></div>
    </div>
  </section>
  <section>
    <h2>Uplinks</h2>
    <div id="drain" class="sub">–</div>
    <table><thead><tr><th>name</th><th>state</th><th class="num">backlog</th><th class="num">in flight</th><th class="num">acknowledged</th><th class="num">drain / s</th><th>drain progress</th><th>last error</th></tr></thead>
    <tbody id="uplinks"><tr><td colspan="8" class="empty">–</td></tr></tbody></table>
  </section>
  <section>
    <h2>Clients</h2>
    <table><thead><tr><th>client id</th><th>user</th><th>address</th><th>protocol</th><th>connected since</th><th class="num">in flight</th><th class="num">queued</th></tr></thead>
    <tbody id="clients"><tr><td colspan="7" class="empty">–</td></tr></tbody></table>
    <div class="sub" id="clients-more"></div>
  </section>
  <div class="two">
    <section>
      <h2>Top topics</h2>
      <table><thead><tr><th>topic</th><th class="num">messages</th><th class="num">msg / s</th></tr></thead>
      <tbody id="topics"><tr><td colspan="3" class="empty">–</td></tr></tbody></table>
    </section>
    <section>
      <h2>Recent warnings and errors</h2>
      <ul class="log" id="logs"><li class="empty">none</li></ul>
    </section>
  </div>
</main>
<div id="login"><form id="login-form">
  <strong>Admin token</strong>
  <span class="sub">This broker requires a bearer token. It is kept in this tab only (sessionStorage).</span>
  <input id="token" type="password" autocomplete="current-password" placeholder="admin.token" required>
  <span class="err" id="login-error"></span>
  <button type="submit">Open dashboard</button>
</form></div>
<script>
"use strict";
const POLL_MS = 1500, POINTS = 60, KEY = "ferry-admin-token";
const $ = (id) => document.getElementById(id);
const series = { connections: [], in: [], out: [] };
let token = sessionStorage.getItem(KEY) || "";
let prev = null, prevTopics = new Map(), peaks = new Map(), timer = 0;

class Unauthorized extends Error {}
async function api(path) {
  const r = await fetch(path, { headers: token ? { Authorization: "Bearer " + token } : {}, cache: "no-store" });
  if (r.status === 401) throw new Unauthorized();
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}
const fmt = (n) => n >= 1e9 ? (n / 1e9).toFixed(1) + "G" : n >= 1e6 ? (n / 1e6).toFixed(1) + "M" : n >= 1e4 ? (n / 1e3).toFixed(1) + "k" : String(Math.round(n));
const rate = (n) => n >= 100 ? fmt(n) : n.toFixed(1);
function bytes(n) { const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; } return (i ? n.toFixed(1) : n) + " " + u[i]; }
function duration(s) { const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60); return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m + "m " + (s % 60) + "s"; }
function el(tag, attrs, ...kids) { const e = document.createElement(tag); for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v); for (const k of kids) e.append(k); return e; }

function push(name, v) { const s = series[name]; s.push(v); if (s.length > POINTS) s.shift(); }
function spark(id, values) {
  const svg = $(id), max = Math.max(1, ...values), n = values.length;
  if (n === 0) { svg.innerHTML = ""; return; }
  // Newest point at the right edge; until there are enough samples, they spread over the width.
  const step = 120 / Math.max(n - 1, Math.min(POINTS - 1, 12));
  const pts = values.map((v, i) => [120 - (n - 1 - i) * step, 38 - v / max * 34]);
  const line = pts.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" ");
  svg.innerHTML = '<path d="M' + pts[0][0].toFixed(1) + ',40 L' + line.replace(/ /g, " L") + ' L' + pts[n - 1][0].toFixed(1) + ',40 Z"></path><polyline points="' + line + '"></polyline>';
}

// A time-series chart with axes: y ticks at round numbers, x ticks every 15 minutes over the
// last hour ending now; one polyline per series. Plain SVG, no library.
const CW = 420, CH = 190, ML = 46, MR = 8, MT = 8, MB = 22, HOUR = 3600e3;
// The y axis ends at four round steps (1, 2 or 5 times a power of ten), so every tick label is round.
function niceStep(v) { const raw = v > 0 ? v / 4 : 0.25; const p = Math.pow(10, Math.floor(Math.log10(raw))); for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p; return 10 * p; }
const yLabel = (v, step) => step < 1 ? v.toFixed(step < 0.1 ? 2 : 1) : fmt(v);
// The x axis spans the last hour, or less while there is less history (at least a minute),
// so a broker started a minute ago does not squeeze its chart into the right edge.
const X_STEPS = [10, 15, 30, 60, 120, 300, 600, 900];
function xLabel(sec) { return sec === 0 ? "now" : sec < 60 ? "-" + sec + " s" : "-" + sec / 60 + " min"; }
function chart(id, points, lines, now) {
  const svg = $(id), w = CW - ML - MR, h = CH - MT - MB;
  const span = Math.min(HOUR, Math.max(60e3, points.length ? now - points[0].t : 0)), t0 = now - span;
  const xStep = X_STEPS.find((st) => span / 1000 / st <= 4) || 900;
  const step = niceStep(Math.max(0, ...points.flatMap((p) => lines.map((l) => p[l.key])))), max = step * 4;
  const x = (t) => ML + (t - t0) / span * w, y = (v) => MT + h - v / max * h;
  let out = "";
  for (let i = 0; i <= 4; i++) {
    const v = max * i / 4, yy = y(v).toFixed(1);
    out += '<line class="grid" x1="' + ML + '" x2="' + (ML + w) + '" y1="' + yy + '" y2="' + yy + '"></line>';
    out += '<text class="ytick" x="' + (ML - 6) + '" y="' + (Number(yy) + 4) + '" text-anchor="end">' + yLabel(v, step) + '</text>';
  }
  for (let sec = Math.floor(span / 1000 / xStep) * xStep; sec >= 0; sec -= xStep) {
    const xx = x(now - sec * 1000), at = xx.toFixed(1);
    out += '<line class="axis" x1="' + at + '" x2="' + at + '" y1="' + (MT + h) + '" y2="' + (MT + h + 4) + '"></line>';
    out += '<text class="xtick" x="' + at + '" y="' + (CH - 6) + '" text-anchor="' + (xx < ML + 20 ? "start" : sec === 0 ? "end" : "middle") + '">' + xLabel(sec) + '</text>';
  }
  out += '<line class="axis" x1="' + ML + '" x2="' + ML + '" y1="' + MT + '" y2="' + (MT + h) + '"></line>';
  out += '<line class="axis" x1="' + ML + '" x2="' + (ML + w) + '" y1="' + (MT + h) + '" y2="' + (MT + h) + '"></line>';
  const shown = points.filter((p) => p.t >= t0);
  for (const l of lines) {
    if (shown.length === 0) continue;
    const pts = shown.map((p) => x(p.t).toFixed(1) + "," + y(p[l.key]).toFixed(1)).join(" ");
    out += '<polyline data-series="' + l.key + '" stroke="' + l.color + '" points="' + pts + '"></polyline>';
  }
  const last = shown.at(-1), now$ = $(id + "-now");
  if (now$) now$.textContent = last ? lines.map((l) => (l.label ? l.label + " " : "") + rate(last[l.key])).join(" · ") : "";
  if (shown.length === 0) out += '<text x="' + (ML + w / 2) + '" y="' + (MT + h / 2) + '" text-anchor="middle">collecting…</text>';
  svg.innerHTML = out;
}

function renderHistory(hist, now) {
  const p = hist.points;
  chart("hist-rates", p, [{ key: "in", color: "#1f6feb", label: "in" }, { key: "out", color: "#8250df", label: "out" }], now);
  chart("hist-backlog", p, [{ key: "backlog", color: "#bf8700" }], now);
  chart("hist-oldest", p, [{ key: "oldest_pending_seconds", color: "#cf222e" }], now);
  const d = hist.drain, el2 = $("drain");
  if (d.backlog === 0) el2.innerHTML = "Backlog <b>0</b> · caught up";
  else {
    const when = d.seconds_to_empty === null
      ? "not shrinking: messages arrive as fast as the cloud acknowledges them, or faster"
      : "empty in <b>~" + duration(d.seconds_to_empty) + "</b>";
    el2.innerHTML = "Backlog <b>" + fmt(d.backlog) + "</b> · draining <b>" + rate(d.drain_per_second) + "</b>/s while <b>" + rate(d.incoming_per_second) + "</b>/s come in (last " + d.window_seconds + " s) · " + when;
  }
}

function renderClients(list, now) {
  const body = $("clients"); body.replaceChildren();
  if (list.data.length === 0) body.append(el("tr", {}, el("td", { colspan: "7", class: "empty" }, "no clients connected")));
  for (const c of list.data) {
    const since = c.connected_at ? new Date(c.connected_at) : null;
    const ago = since ? " (" + duration(Math.max(0, Math.round((now - since.getTime()) / 1000))) + " ago)" : "";
    body.append(el("tr", {},
      el("td", { class: "id", title: c.client_id }, c.client_id), el("td", {}, c.username === null ? "–" : c.username),
      el("td", {}, c.remote_address), el("td", {}, c.protocol + " · " + c.transport),
      el("td", {}, since ? since.toLocaleTimeString() + ago : "–"),
      el("td", { class: "num" }, String(c.session ? c.session.inflight : 0)),
      el("td", { class: "num" }, fmt(c.session ? c.session.queued : 0))));
  }
  $("clients-more").textContent = list.total > list.data.length ? "showing " + list.data.length + " of " + fmt(list.total) : "";
}

function renderBroker(b, now) {
  $("identity").textContent = b.edge_id + " · ferry " + b.version;
  $("uptime").textContent = "up " + duration(b.uptime_seconds);
  $("connections").textContent = fmt(b.connections);
  $("sockets").textContent = b.sockets + " sockets · " + fmt(b.connections_total) + " accepted since start";
  const inTotal = b.messages.received.total, outTotal = b.messages.sent.total;
  let rin = 0, rout = 0;
  if (prev) { const dt = Math.max(0.001, (now - prev.at) / 1000); rin = Math.max(0, (inTotal - prev.in) / dt); rout = Math.max(0, (outTotal - prev.out) / dt); }
  prev = { at: now, in: inTotal, out: outTotal };
  $("rate-in").textContent = rate(rin); $("rate-out").textContent = rate(rout);
  $("total-in").textContent = fmt(inTotal) + " received · " + bytes(b.bytes.received);
  $("total-out").textContent = fmt(outTotal) + " sent · " + bytes(b.bytes.sent);
  push("connections", b.connections); push("in", rin); push("out", rout);
  spark("chart-connections", series.connections); spark("chart-in", series.in); spark("chart-out", series.out);
  $("sessions").textContent = fmt(b.sessions.total);
  $("sessions-detail").textContent = b.sessions.offline + " offline · " + fmt(b.subscriptions) + " subscriptions · " + fmt(b.queued_messages) + " queued";
  $("retained").textContent = fmt(b.retained_messages) + " retained messages";
  $("store-bytes").textContent = bytes(b.store.bytes);
  $("store-detail").textContent = b.store.kind + " · " + fmt(b.store.messages) + " messages in the log" + (b.store.full ? " · FULL" : "");
  const d = b.messages.dropped;
  $("dropped").textContent = fmt(d.total);
  $("dropped-detail").textContent = "queue full " + d.queue_full + " · slow " + d.slow_consumer + " · expired " + d.expired + " · too large " + d.too_large + " · protocol errors " + b.protocol_errors;
}

function renderUplinks(list) {
  const body = $("uplinks"); body.replaceChildren();
  if (list.length === 0) { body.append(el("tr", {}, el("td", { colspan: "8", class: "empty" }, "no uplinks configured"))); return; }
  for (const u of list) {
    const peak = u.backlog_messages === 0 ? 0 : Math.max(peaks.get(u.name) || 0, u.backlog_messages);
    peaks.set(u.name, peak);
    const done = peak === 0 ? 1 : (peak - u.backlog_messages) / peak;
    const bar = el("div", { class: "bar", title: Math.round(done * 100) + "%" }, el("div", { style: "width:" + (done * 100).toFixed(1) + "%" }));
    const eta = u.backlog_messages === 0 ? " caught up" : "";
    body.append(el("tr", {},
      el("td", {}, u.name, el("div", { class: "sub" }, u.url)), el("td", {}, el("span", { class: "state " + u.state }, u.state)),
      el("td", { class: "num" }, fmt(u.backlog_messages)), el("td", { class: "num" }, String(u.inflight)),
      el("td", { class: "num" }, fmt(u.acknowledged)), el("td", { class: "num" }, rate(u.drain_rate)),
      el("td", {}, bar, el("span", { class: "sub" }, " " + Math.round(done * 100) + "%" + eta)),
      el("td", { class: "sub" }, u.last_error || "")));
  }
}

function renderTopics(t, now) {
  const body = $("topics"); body.replaceChildren();
  const next = new Map();
  for (const x of t.data) next.set(x.topic, { n: x.messages, at: now });
  if (t.data.length === 0) body.append(el("tr", {}, el("td", { colspan: "3", class: "empty" }, "no messages yet")));
  for (const x of t.data) {
    const p = prevTopics.get(x.topic);
    const r = p ? Math.max(0, (x.messages - p.n) / Math.max(0.001, (now - p.at) / 1000)) : 0;
    body.append(el("tr", {}, el("td", { class: "topic", title: x.topic }, x.topic), el("td", { class: "num" }, fmt(x.messages)), el("td", { class: "num" }, rate(r))));
  }
  prevTopics = next;
}

function renderLogs(l) {
  const ul = $("logs"); ul.replaceChildren();
  if (l.data.length === 0) { ul.append(el("li", { class: "empty" }, "none")); return; }
  for (const e of l.data) ul.append(el("li", { class: e.level }, el("time", {}, e.at.slice(11, 19)), el("span", { class: "lvl" }, e.level), e.message));
}

function showLogin(message) { $("login").classList.add("show"); $("login-error").textContent = message || ""; $("token").focus(); }

async function tick() {
  clearTimeout(timer);
  try {
    const [b, u, t, l, h, c] = await Promise.all([api("/api/v1/broker"), api("/api/v1/uplinks"), api("/api/v1/top-topics?limit=10"), api("/api/v1/logs?limit=30"), api("/api/v1/metrics/history"), api("/api/v1/clients?limit=50")]);
    const now = Date.now();
    renderBroker(b, now); renderUplinks(u.data); renderTopics(t, now); renderLogs(l); renderHistory(h, now); renderClients(c, now);
    $("status").textContent = "live"; $("status").className = "live";
  } catch (err) {
    if (err instanceof Unauthorized) { showLogin(token ? "That token was refused." : ""); return; }
    $("status").textContent = "unreachable"; $("status").className = "down";
  }
  timer = setTimeout(tick, POLL_MS);
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem(KEY, token);
  $("login").classList.remove("show");
  tick();
});
tick();
</script>
</body>
</html>
`;
