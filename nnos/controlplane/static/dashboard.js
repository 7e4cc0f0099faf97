"use strict";
// The nnos dashboard: the device's state from its token-protected API, live plots (uPlot) from
// WS /v1/live. No framework, no build step. Its state is window.nnos (the browser test reads it).

const $ = (id) => document.getElementById(id);
const esc = (t) => String(t ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const params = new URLSearchParams(location.search);
// seconds the plots keep (?window=S, 5–600): memory is bounded however long the tab stays open
const WINDOW_S = Math.min(Math.max(+params.get("window") || 30, 5), 600);
const COLORS = ["#6cf", "#fc6", "#9e6", "#f8a", "#c9f", "#6ec", "#fa6", "#aaa"];
const state = { token: "", layout: null, points: 0, lastTick: null, paused: false, connection: "idle",
                drops: 0, failsafeBands: [], swaps: [], selected: new Set(), staleRefusals: 0, updateJob: null,
                refreshErrors: {} };
const plots = {};
// an action's outcome stays in #msg until the next action; a background refresh's error (the API
// restarting, a reboot) is shown in #refresh-error, per refresher, until that refresher succeeds
const say = (e) => { if (!e.stale) $("msg").textContent = String(e.message || e); };
function refreshed(name, e) {
  if (e && e.stale) return;
  if (e) state.refreshErrors[name] = String(e.message || e); else delete state.refreshErrors[name];
  $("refresh-error").textContent = Object.entries(state.refreshErrors).map(([k, m]) => `${k}: ${m}`).join(" · ");
}
window.nnos = { state, plots, windowS: WINDOW_S };

// --- the token ------------------------------------------------------------------------------
state.token = params.get("token") || sessionStorage.getItem("nnos-token") || "";
if (params.has("token")) {                                                     // not left in the address bar
  params.delete("token");
  history.replaceState(null, "", location.pathname + (params.size ? "?" + params : ""));
}

function needToken(why) {
  $("login").hidden = false; $("main").hidden = true;
  $("login-why").textContent = why;
  setConnection("no token", "bad");
  document.body.dataset.login = "1";
  if (ws) { ws.onclose = null; ws.close(); ws = null; }
}

function useToken(t) {
  state.token = t.trim();
  sessionStorage.setItem("nnos-token", state.token);
  $("login").hidden = true; $("main").hidden = false;
  document.body.dataset.login = "0";
  connect(); refresh(); refreshSlow();
}

$("login-form").onsubmit = (ev) => { ev.preventDefault(); useToken($("token").value); };

async function api(path, opts = {}) {
  const token = state.token;
  const r = await fetch(path, { ...opts, headers: { ...(opts.headers || {}), Authorization: "Bearer " + token } });
  const body = await r.json().catch(() => ({}));
  if (r.status === 401 && token !== state.token) {   // asked with a token replaced since: not this one's answer
    state.staleRefusals += 1; document.body.dataset.staleRefusals = String(state.staleRefusals);
    throw Object.assign(new Error("answered for a token no longer in use"), { stale: true });
  }
  if (r.status === 401) {
    needToken("The device refused that token. Paste the current one (it changes only when the file is replaced).");
    throw new Error("token refused");
  }
  if (!r.ok) throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || body));
  return body;
}

// --- live data: bounded columns -------------------------------------------------------------
const buf = { t: [], late: [], comp: [], mode: [], chans: {} };
let wallOffset = null, lastSwaps = null;

function resetBuffers(layout) {
  buf.t = []; buf.late = []; buf.comp = []; buf.mode = []; buf.chans = {};
  for (const c of layout.channels) buf.chans[c.topic] = c.names.map(() => []);
  state.swaps = []; wallOffset = null; lastSwaps = layout.swaps;
}

function onTicks(m) {
  const n = m.t.length;
  if (wallOffset === null) wallOffset = Date.now() / 1000 - m.t[n - 1];   // the loop's clock is monotonic
  const start = buf.t.length;
  for (let i = 0; i < n; i++) {
    buf.t.push(m.t[i] + wallOffset);
    buf.late.push(Math.max(m.lateness_us[i], 0.1));      // a log axis: 0 µs drawn at 0.1
    buf.comp.push(Math.max(m.compute_us[i], 0.1));
    buf.mode.push(m.mode[i]);
    for (const topic in buf.chans) {
      const row = (m.channels[topic] || [])[i];
      buf.chans[topic].forEach((col, k) => col.push(row ? row[k] : null));
    }
  }
  if (lastSwaps !== null && m.swaps > lastSwaps) state.swaps.push(buf.t[start]);
  lastSwaps = m.swaps;
  trim();
  state.points += n; state.lastTick = m.tick[n - 1];
  document.body.dataset.points = String(state.points);
  document.body.dataset.lastTick = String(state.lastTick);
  state.failsafeBands = bands();
  if (!state.paused) redraw();
}

function trim() {
  const from = buf.t.length ? buf.t[buf.t.length - 1] - WINDOW_S : 0;
  let k = 0;
  while (k < buf.t.length && buf.t[k] < from) k++;
  if (k === 0) return;
  for (const col of [buf.t, buf.late, buf.comp, buf.mode]) col.splice(0, k);
  for (const topic in buf.chans) buf.chans[topic].forEach((col) => col.splice(0, k));
  state.swaps = state.swaps.filter((t) => t >= from);
}

function bands() {          // [start, end] times of failsafe periods in the window
  const out = [];
  for (let i = 0; i < buf.mode.length; i++) {
    if (buf.mode[i] !== "failsafe") continue;
    if (i > 0 && buf.mode[i - 1] === "failsafe") out[out.length - 1][1] = buf.t[i];
    else out.push([buf.t[i], buf.t[i]]);
  }
  return out;
}

// --- plots ----------------------------------------------------------------------------------
function drawMarks(u) {     // failsafe periods as red bands, model swaps as dashed lines
  const ctx = u.ctx, { top, height } = u.bbox;
  ctx.save();
  ctx.fillStyle = "rgba(220, 40, 40, 0.22)";
  for (const [a, b] of state.failsafeBands) {
    const x0 = u.valToPos(a, "x", true), x1 = u.valToPos(b, "x", true);
    ctx.fillRect(x0, top, Math.max(x1 - x0, 2), height);
  }
  ctx.strokeStyle = "#fc6"; ctx.setLineDash([4, 4]);
  for (const t of state.swaps) {
    const x = u.valToPos(t, "x", true);
    ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
  }
  ctx.restore();
}

function makePlot(el, labels, yLabel, log) {
  const axis = { stroke: "#aaa", grid: { stroke: "#2a2a2a" }, ticks: { stroke: "#333" } };
  const opts = {
    width: Math.max(el.clientWidth, 300), height: 200,
    scales: { x: { time: true }, y: log ? { distr: 3 } : {} },
    axes: [axis, { ...axis, label: yLabel, size: 64 }],
    series: [{ label: "time" }, ...labels.map((label, i) => ({ label, stroke: COLORS[i % COLORS.length], width: 1 }))],
    cursor: { drag: { x: true, y: false } },
    legend: { live: true },
    hooks: { drawClear: [drawMarks], setSelect: [(u) => { if (u.select.width > 0) pause(true); }] },
  };
  const u = new uPlot(opts, [[], ...labels.map(() => [])], el);
  el.addEventListener("dblclick", () => pause(false));
  return u;
}

function buildPlots(layout) {
  for (const k in plots) { plots[k].destroy(); delete plots[k]; }
  const period = 1e6 / layout.rate_hz;
  plots.lateness = makePlot($("plot-late"), ["lateness", "compute"], "µs (log)", true);
  plots.lateness.budget = period;
  $("picker").innerHTML = layout.channels.map((c, i) =>
    `<label><input type="checkbox" data-topic="${esc(c.topic)}" ${state.selected.has(c.topic) ? "checked" : ""}>`
    + `${esc(c.device)}.${esc(c.channel)}</label>`).join("");
  $("plots").innerHTML = "";
  for (const c of layout.channels) {
    if (!state.selected.has(c.topic)) continue;
    const el = document.createElement("div");
    el.className = "plot"; el.dataset.topic = c.topic;
    $("plots").appendChild(el);
    const units = c.units ? ` (${c.units})` : "";
    plots[c.topic] = makePlot(el, c.names, `${c.device}.${c.channel}${units}`, false);
  }
  redraw();
}

function redraw() {
  if (plots.lateness) {
    plots.lateness.setData([buf.t.slice(), buf.late.slice(), buf.comp.slice()]);    // copies: a paused plot keeps its own
    const late = buf.late.filter((v) => v > 0.1 * plots.lateness.budget).length;
    const max = buf.late.length ? Math.max(...buf.late) : 0;
    $("late-note").textContent = `max ${max.toFixed(0)} µs; ${late} of ${buf.late.length} ticks late by over 10 % of the period`;
  }
  for (const topic in buf.chans) if (plots[topic]) plots[topic].setData([buf.t.slice(), ...buf.chans[topic].map((c) => c.slice())]);
}

function pause(on) {
  state.paused = on;
  $("pause").textContent = on ? "Resume" : "Pause";
  if (!on) redraw();
}
$("pause").onclick = () => pause(!state.paused);
$("picker").onchange = (ev) => {
  const topic = ev.target.dataset.topic;
  if (ev.target.checked) state.selected.add(topic); else state.selected.delete(topic);
  buildPlots(state.layout);
};
window.addEventListener("resize", () => { for (const k in plots) plots[k].setSize({ width: plots[k].root.parentNode.clientWidth, height: 200 }); });

function onLayout(m) {       // on every (re)connection and after a loop restart
  const channels = (l) => JSON.stringify(l.channels.map((c) => [c.topic, c.names, c.units]));
  const same = state.layout && channels(state.layout) === channels(m);
  state.layout = m;
  $("board").textContent = m.board;
  setConnection("live", "live");
  lastSwaps = m.swaps;                      // a restarted loop counts its swaps from 0
  if (same) return;                         // the same channels: the plots keep their history
  if (state.selected.size === 0) {          // a sensor and an actuator to start with
    for (const kind of ["sensor", "actuator"]) {
      const c = m.channels.find((x) => x.kind === kind);
      if (c) state.selected.add(c.topic);
    }
  }
  resetBuffers(m);
  buildPlots(m);
}

// --- the stream -----------------------------------------------------------------------------
let ws = null, retryMs = 1000;

function setConnection(text, cls) {
  state.connection = text;
  $("conn").textContent = text; $("conn").className = "conn " + (cls || "");
  document.body.dataset.connection = text;
}

function connect() {
  if (ws) { ws.onclose = null; ws.close(); }
  if (!state.token) return needToken("Everything here comes from the device's API, which answers only with its token.");
  const proto = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${proto}://${location.host}/v1/live?hz=10&token=${encodeURIComponent(state.token)}`);
  ws.onopen = () => { retryMs = 1000; setConnection("live", "live"); };
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === "layout") onLayout(m);
    else if (m.type === "ticks" && state.layout) onTicks(m);
    else if (m.type === "down") setConnection("connected; the loop has not started", "bad");
  };
  ws.onclose = () => {
    state.drops += 1;
    setConnection(`stream dropped at ${new Date().toLocaleTimeString()}; reconnecting…`, "bad");
    reconnect();
  };
}

function reconnect() {      // once the API answers again (a refused token shows the prompt instead)
  setTimeout(async () => {
    try { await api("/v1/status"); connect(); } catch (e) { if (e.message !== "token refused" && !e.stale) reconnect(); }
  }, retryMs);
  retryMs = Math.min(retryMs * 2, 10000);
}

// --- the device's state ---------------------------------------------------------------------
async function refresh() {
  if (!state.token) return;
  try {
    const st = await api("/v1/status"), l = st.loop;
    $("mode").textContent = l.mode; $("mode").className = l.mode;
    document.body.dataset.mode = l.mode;
    $("rate").textContent = l.measured_rate_hz ?? "-";
    $("late").textContent = l.lateness_us ? l.lateness_us.p99.toFixed(0) : "-";
    $("ticks").textContent = l.ticks ?? "-";
    $("failsafe").textContent = l.failsafe ? "FAILSAFE: " + l.failsafe_reason : "";
    // config put on the boot partition that the device refused: a headless device's only way to say it
    const refused = Object.entries(st.boot_config || {}).filter(([, r]) => r.result !== "imported");
    $("bootcfg").textContent = refused.length ? "boot partition config not taken: " +
      refused.map(([name, r]) => `${name}: ${r.why}`).join(" · ") : "";
    for (const k of ["active", "previous"]) $(k).textContent = (l[k] || "-").slice(0, 12);
    document.body.dataset.active = l.active || "";
    refreshed("status");
  } catch (e) { refreshed("status", e); }
}

function modelRow(m, inUse) {
  const r = m.report || {}, lat = r.latency || {};
  const held = inUse[m.id] || m.role;
  const off = m.role === "active" ? "disabled" : "";
  return `<tr><td>${esc(r.name || "(unnamed)")}</td><td><code>${esc(m.id.slice(0, 12))}</code></td>
    <td>${r.plan_bytes ? (r.plan_bytes / 1024).toFixed(1) + " KiB" : "-"}</td><td>${esc(lat.backend || "-")}</td>
    <td>${lat.p999_us ?? "-"}</td><td>${r.signed_by ? "yes: " + esc(r.signed_by) : "no"}</td><td>${esc(held)}</td>
    <td><button data-act="${esc(m.id)}" ${off}>Activate</button> <button data-shadow="${esc(m.id)}" ${off}>Shadow</button></td></tr>`;
}

async function refreshModels() {
  const ms = await api("/v1/models");
  const names = Object.fromEntries(ms.models.map((m) => [m.id, (m.report || {}).name || m.id.slice(0, 12)]));
  $("models").innerHTML = ms.models.map((m) => modelRow(m, ms.in_use || {})).join("");
  const a = ms.last_activation;
  $("last-activation").textContent = a ? `last activation: ${names[a.model] || a.model.slice(0, 12)} — ${a.outcome}`
    + `${a.reason ? " (" + (typeof a.reason === "string" ? a.reason : JSON.stringify(a.reason)) + ")" : ""}`
    + ` at ${new Date(a.at * 1000).toLocaleTimeString()}` : "no activation since the control plane started";
}

async function refreshArms() {
  const ds = (await api("/v1/devices")).devices.filter((d) => d.joints);
  $("arms").hidden = ds.length === 0; $("arms-none").hidden = ds.length > 0;
  $("arm-list").innerHTML = ds.map((d) => `<code>${esc(d.name)}</code> ${d.armed ? "ARMED" : "disarmed"}`
    + ` (${Object.keys(d.joints).map(esc).join(", ")})`).join(" · ");
  document.body.dataset.armed = ds.map((d) => `${d.name}:${d.armed ? 1 : 0}`).join(",");
}

async function refreshRecordings() {
  const r = await api("/v1/recordings");
  $("rec-used").textContent = `${(r.used_bytes / 1e6).toFixed(1)} of ${(r.quota_bytes / 1e6).toFixed(0)} MB`;
  $("recordings").innerHTML = r.recordings.length ? r.recordings.map((x) => `<tr><td><code>${esc(x.id)}</code></td>
    <td>${esc(x.state)}</td><td>${(x.bytes / 1e6).toFixed(2)} MB</td><td>${x.ticks ?? ""} ${x.ticks ? "ticks" : ""}</td></tr>`).join("")
    : `<tr><td class="hint">none yet</td></tr>`;
}

async function refreshVm() {
  const v = await api("/v1/vm");
  $("vm").hidden = !v.configured; $("vm-none").hidden = v.configured;
  document.body.dataset.vmConfigured = v.configured ? "1" : "0";
  if (!v.configured) { $("vm-none").textContent = `Not set up: ${v.detail || "no legacy VM on this device"}.`; return; }
  $("vm-state").textContent = v.state; $("vm-uptime").textContent = v.uptime_s ?? "-";
  $("vm-restarts").textContent = v.restarts;
  $("vm-net").textContent = v.network + (v.network_detail ? ` (${v.network_detail})` : "");
  const ch = v.channel || {};
  $("vm-chan").textContent = `${ch.connected ? "connected" : "not connected"}, ${ch.answered ?? 0} answered, ${ch.refused ?? 0} refused`;
  document.body.dataset.vmState = v.state; document.body.dataset.vmNetwork = v.network;
  const ps = (await api("/v1/vm/proposals")).proposals;
  $("proposals").innerHTML = ps.map((p) => `<tr><td><code>${esc(p.id.slice(0, 12))}</code></td><td>${esc(p.name)}</td>
    <td>${esc(p.format)}</td><td>${p.signed ? "yes" : "no"}</td><td>${new Date(p.received * 1000).toLocaleTimeString()}</td>
    <td><button data-accept="${esc(p.id)}">Accept</button> <button data-reject="${esc(p.id)}">Reject</button></td></tr>`).join("");
  document.body.dataset.proposals = String(ps.length);
}

async function refreshUpdate() {          // the root slots: which runs, the last update, installs
  const u = await api("/v1/system/update");
  $("upd").hidden = !u.available; $("upd-none").hidden = u.available;
  document.body.dataset.update = u.available ? (u.state || "none") : "unavailable";
  if (!u.available) { $("upd-none").textContent = "System updates are not possible here (no update slots)."; return; }
  $("upd-slot").textContent = u.slot || "-"; $("upd-version").textContent = u.version || "-";
  $("upd-boot").textContent = u.this_boot || "not judged yet";
  $("upd-last").textContent = u.last_update || "none";
  $("upd-release").textContent = u.compatible || "";
  if (u.installing && !state.updateJob) $("upd-progress").textContent = u.installing.step || "installing";
}

async function installUpdate() {          // the bundle streamed as the body; its job followed to the end
  const f = $("upd-file").files[0];
  if (!f) throw new Error("choose a bundle (.raucb) first");
  const reboot = $("upd-reboot").checked ? "now" : "later";
  $("upd-progress").textContent = `uploading ${(f.size / 1e6).toFixed(0)} MB…`;
  const job = await api(`/v1/system/update?reboot=${reboot}`, { method: "POST", body: f,
                                                                headers: { "Content-Type": "application/octet-stream" } });
  state.updateJob = job.job;
  for (;;) {
    const j = await api(`/v1/jobs/${job.job}`).catch(() => null);   // a reboot takes the API away
    if (j === null) { $("upd-progress").textContent = "rebooting…"; break; }
    const to = j.result && j.result.installed;
    $("upd-progress").textContent = j.state === "running" ? j.step : j.state === "done"
      ? `installed ${to.version} into slot ${to.slot}; ${j.result.reboot === "now" ? "rebooting…" : j.result.reboot}`
      : `failed: ${j.error.detail}`;
    document.body.dataset.updateJob = j.state;
    if (j.state !== "running") break;
    await new Promise((ok) => setTimeout(ok, 1000));
  }
  state.updateJob = null;
}

async function refreshSlow() {
  if (!state.token) return;
  const panels = { models: refreshModels, arms: refreshArms, recordings: refreshRecordings, vm: refreshVm,
                   update: refreshUpdate };
  for (const [name, f] of Object.entries(panels)) {
    try { await f(); refreshed(name); } catch (e) { refreshed(name, e); }
  }
}

// --- actions --------------------------------------------------------------------------------
const post = (path, body) => api(path, { method: "POST", ...(body ? { headers: { "Content-Type": "application/json" },
                                                                        body: JSON.stringify(body) } : {}) });
const ACTIONS = {
  act: async (id) => { $("msg").textContent = "activating (admission, swap, probation)…";
    $("msg").textContent = (await post(`/v1/models/${id}/activate`)).outcome; },
  shadow: async (id) => { await post(`/v1/models/${id}/shadow`); $("msg").textContent = "shadow running"; },
  accept: async (id) => { $("msg").textContent = "checking the proposal (compile, verify, measure)…";
    $("msg").textContent = `accepted as ${(await post(`/v1/vm/proposals/${id}/accept`)).id.slice(0, 12)} (not active)`; },
  reject: (id) => api(`/v1/vm/proposals/${id}`, { method: "DELETE" }),
};
const BUTTONS = {
  rollback: async () => { $("msg").textContent = "rolled back: " + (await post("/v1/rollback")).outcome; },
  arm: async () => { $("msg").textContent = "armed: " + ((await post("/v1/arm")).armed || []).join(", "); },
  disarm: async () => { $("msg").textContent = "disarmed: " + ((await post("/v1/disarm")).disarmed || []).join(", "); },
  record: async () => { $("msg").textContent = `recording ${(await post("/v1/recordings", { seconds: 10 })).id}`; },
  "upd-install": installUpdate,
  reboot: async () => { $("upd-progress").textContent = "reboot: " + JSON.stringify(await post("/v1/system/reboot")); },
  "vm-start": () => post("/v1/vm/start"), "vm-stop": () => post("/v1/vm/stop"),
  "vm-cut": () => post("/v1/vm/network", { enabled: false }), "vm-restore": () => post("/v1/vm/network", { enabled: true }),
};

document.addEventListener("click", async (ev) => {
  const t = ev.target;
  const key = Object.keys(ACTIONS).find((k) => t.dataset && t.dataset[k]);
  const run = key ? () => ACTIONS[key](t.dataset[key]) : BUTTONS[t.id];
  if (!run || t.tagName !== "BUTTON") return;
  t.disabled = true;
  try { await run(); } catch (e) { say(e); }
  t.disabled = false;
  refresh(); refreshSlow();
});

if (state.token) useToken(state.token);
else needToken("Everything here comes from the device's API, which answers only with its token.");
setInterval(refresh, 1000);
setInterval(refreshSlow, 3000);
