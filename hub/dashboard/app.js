// AgentCom dashboard. No framework, no build step: the hub serves this file.
//
// Data flow: sign in (cookie), load one snapshot (/api/state, /api/agents,
// /api/tasks, /api/changes, /api/repos, /api/alerts), then live on
// /api/events (EventSource reconnects by itself with Last-Event-ID): task,
// agent, change, repo and alert events. Counts move with each event; the
// snapshot is also refreshed at most once a second for percentiles and
// throughput. All text from tasks, agents, changes and alerts is inserted
// with textContent, never as HTML.
"use strict";

const MAX_TASKS = 500;
const ROWS = 200;
// Alert thresholds; `/dashboard?offline_alert_s=300&unaccepted_alert_s=30&oldest_queued_alert_s=120` changes them.
const PARAMS = new URLSearchParams(location.search);
const seconds = (name, dflt) => { const v = Number(PARAMS.get(name)); return (Number.isFinite(v) && v > 0 ? v : dflt) * 1000; };
const OFFLINE_ALERT_MS = seconds("offline_alert_s", 120);
const UNACCEPTED_ALERT_MS = seconds("unaccepted_alert_s", 10);
const OLDEST_QUEUED_ALERT_MS = seconds("oldest_queued_alert_s", 60);
const LANES = ["urgent", "high", "normal", "low"];
const STATUSES = ["queued", "assigned", "working", "in_review", "completed", "failed", "dead", "cancelled"];
const MAX_CHANGES = 200;
const FILES_SHOWN = 8;
// Hub alerts whose condition the page cannot see are shown this long.
const HUB_ALERT_MS = seconds("hub_alert_s", 600);

const $ = (sel) => document.querySelector(sel);
const S = {
  role: null,
  snapshot: null,
  agents: new Map(),
  tasks: new Map(),
  dead: new Map(),
  clockOffset: 0,
  es: null,
  live: false,
  renderQueued: false,
  stateTimer: null,
  detailId: null,
  detailTimer: null,
  events: 0,
  changes: new Map(),
  changesDirty: true,
  repos: new Map(),
  hubAlerts: [],
  rejecting: null, // { id, reason, requeue }: the open reject form
  openLogs: new Set(), // changes whose check log is unfolded
  openHistory: new Set(), // changes whose history is unfolded
  changeHistory: new Map(), // change id → its history entries (null: loading)
  changeNotes: new Map(), // change id → its last transition seen live
};

// ----- helpers --------------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k === "style") Object.assign(e.style, v); // CSSOM: allowed by the CSP, unlike style=""
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else if (k === "onclick") e.addEventListener("click", v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function now() { return Date.now() + S.clockOffset; }
function ms(t) { return t ? Date.parse(t) : null; }

function dur(millis) {
  if (millis === null || millis === undefined || isNaN(millis)) return "–";
  const s = Math.max(0, Math.floor(millis / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

function ago(t) { const x = ms(t); return x === null ? "–" : `${dur(now() - x)} ago`; }
function clock(t) { const x = ms(t); return x === null ? "–" : new Date(x).toLocaleTimeString(); }
function safeUrl(u) { return typeof u === "string" && /^https?:\/\//i.test(u) ? u : null; }
function badge(text) { return el("span", { class: `badge ${text}`, text }); }
function laneOf(t) { return t.attempts > 0 ? `${t.priority}_retry` : t.priority; }
function isAdmin() { return S.role === "admin"; }
function short(sha) { return typeof sha === "string" ? sha.slice(0, 10) : "–"; }

async function api(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (_) { /* empty body */ }
  if (!r.ok) {
    const err = new Error((data && data.error && data.error.message) || r.statusText);
    err.status = r.status;
    throw err;
  }
  return data;
}

// ----- sign in ----------------------------------------------------------------

function showSignIn(message) {
  if (S.es) { S.es.close(); S.es = null; }
  S.role = null;
  $("#app").hidden = true;
  $("#sign-out").hidden = true;
  $("#sign-in").hidden = false;
  $("#role").textContent = "";
  setLive(false);
  const err = $("#sign-in-error");
  err.hidden = !message;
  err.textContent = message || "";
}

async function signedIn(role) {
  S.role = role;
  document.body.dataset.role = role;
  $("#sign-in").hidden = true;
  $("#app").hidden = false;
  $("#sign-out").hidden = false;
  $("#role").textContent = role === "admin" ? "admin" : "viewer (read only)";
  await loadAll();
  connect();
}

async function signIn(ev) {
  ev.preventDefault();
  await signInWith($("#token").value.trim());
}

// The token of a sign-in link (/dashboard#token=…), taken out of the
// address bar at once: a fragment never reaches the hub, and once replaced
// it stays out of the history too.
function tokenFromLink() {
  if (!location.hash) return null;
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (token === null) return null;
  history.replaceState(null, "", location.pathname + location.search);
  return token.trim();
}

async function signInWith(token) {
  try {
    const me = await api("POST", "/api/session", { token });
    $("#token").value = "";
    await signedIn(me.role);
  } catch (e) {
    showSignIn(e.status === 401 ? "That token is not valid." : `Sign-in failed: ${e.message}`);
  }
}

async function signOut() {
  try { await api("DELETE", "/api/session"); } catch (_) { /* signed out anyway */ }
  showSignIn();
}

// ----- data -----------------------------------------------------------------------

function applySnapshot(snap) {
  S.snapshot = snap;
  S.clockOffset = Date.parse(snap.at) - Date.now();
  $("#hub-version").textContent = `v${snap.version}`;
}

function keepTask(t) {
  S.tasks.set(t.id, t);
  if (S.tasks.size > MAX_TASKS) {
    const ids = [...S.tasks.keys()].sort();
    for (const id of ids.slice(0, S.tasks.size - MAX_TASKS)) S.tasks.delete(id);
  }
  if (t.status === "dead") S.dead.set(t.id, t); else S.dead.delete(t.id);
}

async function loadAll() {
  try {
    const [snap, agents, recent, dead, changes, repos, alerts] = await Promise.all([
      api("GET", "/api/state"),
      api("GET", "/api/agents"),
      api("GET", `/api/tasks?limit=${ROWS}&fields=result`),
      api("GET", "/api/tasks?status=dead&limit=200&fields=result"),
      api("GET", `/api/changes?limit=${MAX_CHANGES}`),
      api("GET", "/api/repos"),
      api("GET", "/api/alerts?limit=100"),
    ]);
    applySnapshot(snap);
    S.agents = new Map(agents.agents.map((a) => [a.id, a]));
    S.tasks = new Map();
    S.dead = new Map();
    for (const t of recent.tasks) keepTask(t);
    for (const t of dead.tasks) S.dead.set(t.id, t);
    S.changes = new Map(changes.changes.map((c) => [c.id, c]));
    S.repos = new Map(repos.repos.map((r) => [r.name, r]));
    S.hubAlerts = alerts.alerts;
    S.changesDirty = true;
    render();
  } catch (e) {
    if (e.status === 401) showSignIn("Your session ended; sign in again.");
  }
}

/** Refresh the snapshot soon (at most once a second). */
function refreshStateSoon() {
  if (S.stateTimer) return;
  S.stateTimer = setTimeout(async () => {
    S.stateTimer = null;
    try { applySnapshot(await api("GET", "/api/state")); schedule(); } catch (_) { /* next event retries */ }
  }, 1000);
}

function onTask(data) {
  const t = data.task;
  const tr = data.transition;
  const counts = S.snapshot && S.snapshot.tasks;
  if (counts && tr && tr.from !== tr.to) {
    if (tr.from) counts[tr.from] = Math.max(0, (counts[tr.from] || 0) - 1);
    if (tr.to) counts[tr.to] = (counts[tr.to] || 0) + 1;
    const depth = S.snapshot.queue.depth;
    if (tr.from === "queued") depth[laneOf(t)] = Math.max(0, (depth[laneOf(t)] || 0) - 1);
    if (tr.to === "queued") depth[laneOf(t)] = (depth[laneOf(t)] || 0) + 1;
    if (tr.to === "completed") S.snapshot.throughput.completed_last_minute += 1;
  }
  const old = S.tasks.get(t.id);
  if (old && old.description && !t.description) t.description = old.description;
  keepTask(t);
  if (t.repo && !old) S.changesDirty = true; // its change shows its title
  if (S.detailId === t.id) refreshDetailSoon();
  refreshStateSoon();
  schedule();
}

function keepChange(c) {
  S.changes.set(c.id, c);
  if (S.changes.size > MAX_CHANGES) {
    const old = [...S.changes.values()].sort(byNewest).slice(MAX_CHANGES);
    for (const o of old) {
      S.changes.delete(o.id);
      S.changeNotes.delete(o.id);
      S.changeHistory.delete(o.id);
      S.openLogs.delete(o.id);
      S.openHistory.delete(o.id);
    }
  }
  S.changesDirty = true;
}

function onChange(data) {
  const c = data.change;
  const tr = data.transition;
  const counts = S.snapshot && S.snapshot.changes;
  if (counts && tr && tr.from !== tr.to) {
    if (tr.from) counts[tr.from] = Math.max(0, (counts[tr.from] || 0) - 1);
    if (tr.to) counts[tr.to] = (counts[tr.to] || 0) + 1;
  }
  if (tr) S.changeNotes.set(c.id, tr);
  S.changeHistory.delete(c.id);
  keepChange(c);
  refreshStateSoon();
  schedule();
}

async function loadChangeHistory(id) {
  if (S.changeHistory.has(id)) return;
  S.changeHistory.set(id, null);
  try {
    const c = await api("GET", `/api/changes/${encodeURIComponent(id)}`);
    S.changeHistory.set(id, c.history || []);
  } catch (e) {
    S.changeHistory.delete(id);
    flash(`Could not load change ${id}: ${e.message}`);
  }
  S.changesDirty = true;
  schedule();
}

function onRepo(data) {
  S.repos.set(data.repo.name, data.repo);
  S.changesDirty = true; // queue positions
  schedule();
}

function onAlert(a) {
  S.hubAlerts.unshift(a);
  S.hubAlerts.length = Math.min(S.hubAlerts.length, 100);
  schedule();
}

function onAgent(data) {
  if (data.removed) S.agents.delete(data.agent.id);
  else S.agents.set(data.agent.id, data.agent);
  schedule();
}

function setLive(on) {
  S.live = on;
  const s = $("#live-status");
  s.className = `live ${on ? "on" : "off"}`;
  s.textContent = on ? "live" : "reconnecting…";
  schedule();
}

function connect() {
  if (S.es) S.es.close();
  const es = new EventSource("/api/events");
  S.es = es;
  es.onopen = () => setLive(true);
  es.onerror = async () => {
    setLive(false);
    // EventSource retries by itself; stop if the session is gone.
    try { await api("GET", "/api/session"); } catch (e) { if (e.status === 401) showSignIn("Your session ended; sign in again."); }
  };
  const count = (ev) => { S.events += 1; document.body.dataset.lastEventId = ev.lastEventId; };
  es.addEventListener("task", (ev) => { count(ev); onTask(JSON.parse(ev.data)); });
  es.addEventListener("agent", (ev) => { count(ev); onAgent(JSON.parse(ev.data)); });
  es.addEventListener("progress", count);
  es.addEventListener("change", (ev) => { count(ev); onChange(JSON.parse(ev.data)); });
  es.addEventListener("repo", (ev) => { count(ev); onRepo(JSON.parse(ev.data)); });
  es.addEventListener("alert", (ev) => { count(ev); onAlert(JSON.parse(ev.data)); });
  es.addEventListener("lanes", (ev) => { count(ev); S.snapshot.paused_lanes = JSON.parse(ev.data).paused_lanes || []; schedule(); });
  es.addEventListener("resync", () => loadAll());
}

// ----- actions ------------------------------------------------------------------------

async function act(action, id) {
  try {
    const t = await api("POST", `/api/tasks/${encodeURIComponent(id)}/${action}`);
    keepTask(t);
    if (S.detailId === id) openDetail(id);
    schedule();
  } catch (e) {
    flash(`Could not ${action} ${id}: ${e.message}`);
  }
}

// Pause (drain) or resume an agent, or a priority lane: `kind` is
// "agents" or "lanes". The event bus brings the new state back.
async function control(kind, id, action) {
  try {
    const r = await api("POST", `/api/${kind}/${encodeURIComponent(id)}/${action}`);
    if (kind === "lanes") S.snapshot.paused_lanes = r.paused_lanes || [];
    else {
      const a = S.agents.get(id);
      if (a) a.paused = r.paused;
    }
    schedule();
  } catch (e) {
    flash(`Could not ${action} ${kind === "lanes" ? "lane" : "agent"} ${id}: ${e.message}`);
  }
}

function pauseButton(kind, id, paused) {
  const can = isAdmin();
  const action = paused ? "resume" : "pause";
  const what = kind === "lanes"
    ? (paused ? "assign this lane's tasks again" : "hold this lane's tasks in the queue; other lanes flow")
    : (paused ? "offer this agent work again" : "drain: it finishes its current task and takes no other");
  return el("button", { class: "link pause", type: "button", "data-action": action, "data-id": id,
    disabled: can ? null : "disabled", title: can ? what : "needs the admin token",
    onclick: (e) => { e.stopPropagation(); control(kind, id, action); }, text: paused ? "Resume" : "Pause" });
}

async function decide(action, id, body) {
  try {
    const c = await api("POST", `/api/changes/${encodeURIComponent(id)}/${action}`, body);
    if (S.rejecting && S.rejecting.id === id) S.rejecting = null;
    keepChange(c);
    schedule();
  } catch (e) {
    S.changesDirty = true; // the buttons again
    flash(`Could not ${action} change ${id}: ${e.message}`);
  }
}

let flashTimer = null;
function flash(text) {
  S.flash = text;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => { S.flash = null; schedule(); }, 6000);
  schedule();
}

function actionButtons(t) {
  const out = [];
  const can = isAdmin();
  if (["dead", "failed", "cancelled"].includes(t.status)) {
    out.push(el("button", { class: "primary", "data-action": "retry", "data-id": t.id, disabled: can ? null : "disabled",
      title: can ? "queue it again with a fresh retry budget" : "needs the admin token", onclick: (e) => { e.stopPropagation(); act("retry", t.id); }, text: "Retry" }));
  }
  if (!["completed", "cancelled"].includes(t.status)) {
    out.push(el("button", { class: "danger", "data-action": "cancel", "data-id": t.id, disabled: can ? null : "disabled",
      title: can ? "cancel it (an agent working on it is told to stop)" : "needs the admin token", onclick: (e) => { e.stopPropagation(); act("cancel", t.id); }, text: "Cancel" }));
  }
  return out;
}

// ----- detail panel -------------------------------------------------------------------------

function refreshDetailSoon() {
  if (S.detailTimer) return;
  S.detailTimer = setTimeout(() => { S.detailTimer = null; if (S.detailId) openDetail(S.detailId); }, 500);
}

async function openDetail(id) {
  S.detailId = id;
  let t;
  try { t = await api("GET", `/api/tasks/${encodeURIComponent(id)}`); } catch (e) { flash(`Could not load ${id}: ${e.message}`); return; }
  if (S.detailId !== id) return;
  const panel = $("#task-detail");
  panel.hidden = false;
  panel.dataset.id = id;
  panel.dataset.status = t.status;
  $("#detail-title").textContent = t.title;
  const fields = $("#detail-fields");
  fields.replaceChildren();
  const r = t.result || {};
  const pr = safeUrl(r.pr_url);
  const rows = [
    ["id", t.id], ["status", badge(t.status)], ["priority", t.priority],
    ["agent", t.assigned_to || "–"], ["generation", String(t.generation)],
    ["attempts", `${t.attempts} of ${t.max_retries + 1}${t.free_attempts ? ` (${t.free_attempts} free: environment or rate limit)` : ""}`], ["needs", (t.needed_capabilities || []).join(", ") || "–"],
    ["created", clock(t.created_at)], ["updated", `${clock(t.updated_at)} (${ago(t.updated_at)})`],
    ["not before", t.not_before ? `${clock(t.not_before)}` : null], ["timeout", `${t.timeout_s}s`],
    ["repo", t.repo], ["last error", t.last_error], ["summary", r.summary], ["branch", r.branch],
    ["changes", changeLinks(t.id)],
    ["pull request", pr ? el("a", { href: pr, target: "_blank", rel: "noopener noreferrer", text: pr }) : null],
    ["description", t.description || null],
    ["earlier attempts", dossierList(t)],
    ["candidates", candidateList(t)],
  ];
  for (const [k, v] of rows) {
    if (v === null || v === undefined || v === "") continue;
    fields.append(el("dt", { text: k }), el("dd", {}, typeof v === "string" ? document.createTextNode(v) : v));
  }
  if (t.status === "queued" || t.status === "failed") {
    try {
      const why = await api("GET", `/api/tasks/${encodeURIComponent(id)}/explain`);
      if (S.detailId === id && why.reasons.length) {
        fields.append(el("dt", { text: "why it waits" }),
          el("dd", {}, el("ul", { class: "why", "data-field": "why" }, ...why.reasons.map((r) => el("li", { text: r })))));
      }
    } catch (e) { /* the rest of the page stands */ }
  }
  $("#detail-actions").replaceChildren(...actionButtons(t));
  const body = $("#detail-history tbody");
  body.replaceChildren(...(t.history || []).map((h) => el("tr", { "data-event": h.event, "data-blame": h.blame || "" },
    el("td", { text: clock(h.at) }), el("td", { text: h.event }),
    el("td", { text: `${h.from || "–"} → ${h.to || "–"}` }), el("td", { text: h.agent_id || "–" }),
    el("td", { text: String(h.generation) }), el("td", {}, ...(h.blame ? [el("span", { class: `blame ${h.blame}`, text: `blame: ${h.blame}` }), " "] : []), h.detail || ""))));
}

/** The task's dossier: how its earlier attempts ended, as the next runner sees it. */
function dossierList(t) {
  const records = (t.dossier && t.dossier.attempts) || [];
  if (!records.length) return null;
  return el("ol", { class: "dossier", "data-field": "dossier" }, ...records.map((a) => el("li", { "data-blame": a.blame || "" },
    el("span", { text: `#${a.generation} ${a.agent_id}: ${a.outcome}` }),
    ...(a.blame ? [" ", el("span", { class: `blame ${a.blame}`, text: `blame: ${a.blame}` })] : []),
    ...(a.error ? [el("div", { class: "muted", text: a.error })] : []),
    ...(a.branch ? [el("div", { class: "muted", text: `branch ${a.branch}${a.head ? ` at ${a.head.slice(0, 10)}` : ""}` })] : []),
    ...(a.log_tail ? [el("details", {}, el("summary", { text: "log tail" }), el("pre", { text: a.log_tail }))] : []))));
}

/** Late results of superseded attempts, kept rather than dropped. */
function candidateList(t) {
  const cs = t.candidates || [];
  if (!cs.length) return null;
  return el("ul", { class: "candidates", "data-field": "candidates" }, ...cs.map((c) => el("li", {},
    el("span", { text: `#${c.generation} ${c.agent_id}: branch ${c.branch}${c.head ? ` at ${c.head.slice(0, 10)}` : ""}` }),
    ...(c.summary ? [el("div", { class: "muted", text: c.summary })] : []))));
}

/** The task's changes the page knows, each a link to its card. */
function changeLinks(taskId) {
  const cs = [...S.changes.values()].filter((c) => c.task_id === taskId).sort(byNewest);
  if (!cs.length) return null;
  return el("span", {}, ...cs.map((c) => el("button", { class: "link", "data-change": c.id, title: "show the change",
    onclick: () => { closeDetail(); $(`.change[data-id="${CSS.escape(c.id)}"]`)?.scrollIntoView({ block: "center" }); },
    text: `${c.id} (${c.status})` })));
}

function closeDetail() {
  S.detailId = null;
  $("#task-detail").hidden = true;
}

// ----- rendering ------------------------------------------------------------------------------

function schedule() {
  if (S.renderQueued) return;
  S.renderQueued = true;
  requestAnimationFrame(() => { S.renderQueued = false; render(); });
}

function render() {
  if (!S.snapshot || $("#app").hidden) return;
  renderTiles();
  renderPipeline();
  renderRepos();
  if (S.changesDirty) renderChanges();
  renderLanes();
  renderAgents();
  renderTasks();
  renderDead();
  renderAlerts();
}

function renderTiles() {
  const s = S.snapshot;
  const lat = s.assignment_latency_ms || {};
  $("#tile-throughput").textContent = String(s.throughput.completed_last_minute);
  $("#tile-latency").textContent = lat.samples ? `${lat.p50_ms} / ${lat.p99_ms} ms` : "–";
  const oldest = ms(s.queue.oldest_queued_at);
  $("#tile-oldest").textContent = oldest ? dur(now() - oldest) : "none";
  $("#tile-connected").textContent = `${[...S.agents.values()].filter((a) => a.connected).length} / ${S.agents.size}`;
  $("#tile-stale").textContent = String(s.stale_messages);
}

function renderPipeline() {
  for (const st of STATUSES) $(`#count-${st}`).textContent = String(S.snapshot.tasks[st] || 0);
  $("#count-merged").textContent = String((S.snapshot.changes || {}).merged || 0);
  const f = $("#filter-status").value;
  const cf = $("#filter-change").value;
  for (const stage of document.querySelectorAll(".stage")) {
    stage.classList.toggle("active", stage.dataset.status ? stage.dataset.status === f : stage.dataset.changeStatus === cf);
  }
}

// ----- repositories and changes ------------------------------------------------------------

function byNewest(a, b) { return (ms(b.created_at) - ms(a.created_at)) || b.id.localeCompare(a.id); }

function renderRepos() {
  const repos = [...S.repos.values()].sort((a, b) => a.name.localeCompare(b.name));
  $("#repos-card").hidden = repos.length === 0;
  $("#repos").replaceChildren(...repos.map((r) => {
    const queue = (r.queue || []).length;
    return el("div", { class: `repo ${r.health}`, "data-repo": r.name, "data-health": r.health, "data-paused": String(!!r.merges_paused) },
      el("div", { class: "name" }, el("span", { text: r.name }), badge(r.health)),
      el("div", { class: "row", title: r.main_sha || "" , text: `${r.main_branch} @ ${short(r.main_sha)}` }),
      el("div", { class: `row${r.merges_paused ? " error" : ""}`, "data-field": "merges",
        text: r.merges_paused ? "merges paused: main fails its check" : "merges running" }),
      el("div", { class: "row", "data-field": "queue", title: (r.queue || []).join(", "),
        text: queue ? `merge queue: ${queue}` : "merge queue: empty" }));
  }));
}

function changeButtons(c) {
  if (c.status !== "escalated") return [];
  const can = isAdmin();
  const why = "needs the admin token";
  return [
    el("button", { class: "primary", "data-action": "approve", "data-id": c.id, disabled: can ? null : "disabled",
      title: can ? "merge it: the change goes to the merge queue" : why,
      onclick: (e) => { e.currentTarget.disabled = true; decide("approve", c.id); }, text: "Approve" }),
    el("button", { class: "danger", "data-action": "reject", "data-id": c.id, disabled: can ? null : "disabled",
      title: can ? "say no, with a reason" : why,
      onclick: () => { S.rejecting = { id: c.id, reason: "", requeue: false }; S.changesDirty = true; render(); $(`.change[data-id="${CSS.escape(c.id)}"] .reject-reason`)?.focus(); },
      text: "Reject…" }),
  ];
}

function rejectForm(c) {
  const draft = S.rejecting;
  const reason = el("input", { class: "reject-reason", type: "text", required: "required", maxlength: "4000",
    placeholder: "why (the agent that does it again reads this)", "aria-label": "reason" });
  reason.value = draft.reason;
  reason.addEventListener("input", () => { draft.reason = reason.value; });
  const requeue = el("input", { class: "reject-requeue", type: "checkbox" });
  requeue.checked = draft.requeue;
  requeue.addEventListener("change", () => { draft.requeue = requeue.checked; });
  const form = el("form", { class: "reject-form", "data-id": c.id },
    reason,
    el("label", { title: "on: the task is queued again; off: it goes dead" }, requeue, document.createTextNode(" queue the task again")),
    el("button", { class: "danger", type: "submit", "data-action": "confirm-reject", text: "Reject" }),
    el("button", { type: "button", class: "link", "data-action": "cancel-reject", text: "Cancel",
      onclick: () => { S.rejecting = null; S.changesDirty = true; schedule(); } }));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const why = draft.reason.trim();
    if (!why) { reason.focus(); return; }
    for (const b of form.querySelectorAll("button")) b.disabled = true;
    decide("reject", c.id, { reason: why, requeue: draft.requeue });
  });
  return form;
}

function changeCard(c) {
  const task = S.tasks.get(c.task_id);
  const n = c.files_changed || (c.files || []).length;
  const files = c.files || [];
  const head = el("div", { class: "change-head" },
    badge(c.status),
    el("span", { class: "what", title: c.task_id, text: task ? task.title : c.task_id }),
    el("span", { class: "lines", "data-field": "lines" },
      el("span", { class: "add", text: `+${c.lines_added || 0}` }), document.createTextNode(" "),
      el("span", { class: "del", text: `−${c.lines_removed || 0}` })));
  const meta = el("div", { class: "row muted" },
    el("span", { class: "chip", title: "branch", "data-field": "branch", text: c.branch }),
    document.createTextNode(` ${c.repo} · ${c.agent_id} · #${c.generation} · ${short(c.base)} → ${short(c.head)} · ${c.id} · updated ${clock(c.updated_at)}`));
  const out = [head, meta];
  const fileList = el("ul", { class: "files" }, ...files.slice(0, FILES_SHOWN).map((f) => el("li", { text: f })));
  if (n > Math.min(files.length, FILES_SHOWN)) fileList.append(el("li", { class: "muted", text: `… and ${n - Math.min(files.length, FILES_SHOWN)} more` }));
  out.push(el("div", { class: "row", "data-field": "files", "data-count": String(n) },
    el("span", { class: "muted", text: `${n} file${n === 1 ? "" : "s"}` }), fileList));
  if (c.gate) {
    out.push(el("div", { class: "row gate", "data-field": "gate", "data-decision": c.gate.decision },
      el("span", { class: "muted", text: "gate " }), badge(c.gate.decision),
      el("ul", { class: "reasons" }, ...(c.gate.reasons || []).map((r) => el("li", { text: r })))));
  }
  if (c.review) {
    const v = c.review.verdict ? `${c.review.verdict}` : "waiting";
    out.push(el("div", { class: "row", "data-field": "review",
      text: `review ${c.review.task_id}${c.review.agent_id ? ` by ${c.review.agent_id}` : ""}: ${v}${c.review.notes ? ` — ${c.review.notes}` : ""}` }));
  }
  if (c.check) {
    const ok = c.check.exit_code === 0;
    const code = c.check.exit_code === null || c.check.exit_code === undefined ? "no exit code (timed out or did not start)" : `exit ${c.check.exit_code}`;
    const details = el("details", { class: `check ${ok ? "ok" : "bad"}`, "data-field": "check", "data-exit-code": String(c.check.exit_code) },
      el("summary", { text: `check: ${code} in ${Number(c.check.duration_s).toFixed(1)} s${c.check.sha ? ` on ${short(c.check.sha)}` : ""}` }),
      el("pre", { class: "log", text: c.check.log_tail || "(no output)" }));
    details.open = S.openLogs.has(c.id);
    details.addEventListener("toggle", () => { if (details.open) S.openLogs.add(c.id); else S.openLogs.delete(c.id); });
    out.push(details);
  }
  const note = S.changeNotes.get(c.id);
  if (note && note.detail && ["rejected", "sent_back", "superseded"].includes(c.status)) {
    out.push(el("div", { class: "row note", "data-field": "note", text: `${note.event}: ${note.detail}` }));
  }
  if (c.merged_sha) out.push(el("div", { class: "row", "data-field": "merged-sha", title: c.merged_sha, text: `merged as ${short(c.merged_sha)}` }));
  if (c.status === "merging") {
    const q = (S.repos.get(c.repo) || {}).queue || [];
    const at = q.indexOf(c.id);
    if (at >= 0) out.push(el("div", { class: "row muted", text: at === 0 ? "next in the merge queue" : `position ${at + 1} in the merge queue` }));
  }
  const history = el("details", { class: "history", "data-field": "history" }, el("summary", { text: "history" }));
  const entries = S.changeHistory.get(c.id);
  if (S.openHistory.has(c.id)) {
    history.open = true;
    if (entries === undefined) loadChangeHistory(c.id);
  }
  history.append(entries ? el("table", {}, el("tbody", {}, ...entries.map((h) => el("tr", { "data-event": h.event },
    el("td", { text: clock(h.at) }), el("td", { text: h.event }),
    el("td", { text: `${h.from || "–"} → ${h.to || "–"}` }), el("td", { text: h.detail || "" })))))
    : el("p", { class: "muted", text: "loading…" }));
  history.addEventListener("toggle", () => {
    if (history.open) { S.openHistory.add(c.id); loadChangeHistory(c.id); } else S.openHistory.delete(c.id);
  });
  out.push(history);
  const buttons = changeButtons(c);
  if (buttons.length) out.push(el("div", { class: "actions" }, ...buttons));
  if (S.rejecting && S.rejecting.id === c.id && c.status === "escalated" && isAdmin()) out.push(rejectForm(c));
  return el("div", { class: `change ${c.status}`, "data-id": c.id, "data-status": c.status, "data-task": c.task_id }, ...out);
}

function renderChanges() {
  S.changesDirty = false;
  const f = $("#filter-change").value;
  const all = [...S.changes.values()].sort(byNewest);
  $("#changes-card").hidden = all.length === 0 && S.repos.size === 0;
  const waiting = all.filter((c) => c.status === "escalated").length;
  $("#changes-count").textContent = waiting ? `(${waiting} waiting for a person)` : "";
  const shown = all.filter((c) => !f || c.status === f);
  // Keep the reason being typed, and where the cursor is.
  const active = document.activeElement;
  const typing = active && active.classList.contains("reject-reason") ? [active.selectionStart, active.selectionEnd] : null;
  $("#changes").replaceChildren(...(shown.length ? shown.map(changeCard)
    : [el("p", { class: "muted", text: f ? `No ${f} changes.` : "No changes yet: a repository task that commits opens one." })]));
  const input = typing && S.rejecting && $(`.change[data-id="${CSS.escape(S.rejecting.id)}"] .reject-reason`);
  if (input) { input.focus(); input.setSelectionRange(...typing); }
}

function renderLanes() {
  const depth = S.snapshot.queue.depth;
  const max = Math.max(1, ...LANES.map((l) => (depth[l] || 0) + (depth[`${l}_retry`] || 0)));
  const pausedLanes = S.snapshot.paused_lanes || [];
  const out = [];
  for (const l of LANES) {
    const fresh = depth[l] || 0;
    const retry = depth[`${l}_retry`] || 0;
    const paused = pausedLanes.includes(l);
    out.push(el("span", { class: paused ? "paused" : null, "data-lane-name": l, title: paused ? "paused: its tasks stay queued" : null,
      text: paused ? `${l} ⏸` : l }));
    out.push(el("div", { class: "bar", title: `${fresh} new, ${retry} retrying` },
      el("span", { class: "fresh", style: { width: `${(100 * fresh) / max}%` } }),
      el("span", { class: "retry", style: { width: `${(100 * retry) / max}%` } })));
    out.push(el("span", { "data-lane": l, text: retry ? `${fresh}+${retry}` : String(fresh) }));
    out.push(el("span", { "data-lane-control": l }, pauseButton("lanes", l, paused)));
  }
  $("#lanes").replaceChildren(...out);
}

function renderAgents() {
  const cards = [...S.agents.values()].sort((a, b) => a.id.localeCompare(b.id)).map((a) => {
    const cur = a.current_task;
    const task = cur && S.tasks.get(cur.task_id);
    const rows = [el("div", { class: "name" }, el("span", { text: a.id }),
      el("span", {}, ...(a.paused ? [el("span", { class: "badge paused", "data-field": "paused", title: "paused: it takes no new task", text: "paused" })] : []), badge(a.state)))];
    if (cur) {
      rows.push(el("div", { class: "row", title: cur.task_id,
        text: `${a.state === "assigned" ? "assigned" : "working on"} ${task ? task.title : cur.task_id} #${cur.generation} · ${dur(now() - ms(a.state_since))}` }));
    } else {
      rows.push(el("div", { class: "row", text: `${a.state} for ${dur(now() - ms(a.state_since))}` }));
    }
    rows.push(el("div", { class: "row", text: a.connected ? `heartbeat ${ago(a.last_heartbeat_at)}` : `disconnected${a.last_heartbeat_at ? `, last heartbeat ${ago(a.last_heartbeat_at)}` : ""}` }));
    if (a.consecutive_failures || a.degraded_until) {
      const until = a.degraded_until && ms(a.degraded_until) > now() ? `; degraded until ${clock(a.degraded_until)}` : "";
      const why = a.degraded_reason ? ` (${a.degraded_reason})` : "";
      rows.push(el("div", { class: "row error", "data-field": "degraded", text: `${a.consecutive_failures} failure(s) in a row${until}${why}` }));
    }
    const usage = S.snapshot && S.snapshot.usage;
    const spent = usage && usage.agents && usage.agents[a.id];
    const ctxWindow = a.context_window_tokens ? ` · context ${a.context_window_tokens.toLocaleString()} tokens` : " · no context window said";
    rows.push(el("div", { class: "row", "data-field": "usage", title: usage ? `UTC day ${usage.day}` : null,
      text: `today ${(spent ? spent.tokens : 0).toLocaleString()} tokens · $${(spent ? spent.cost_usd : 0).toFixed(2)}${ctxWindow}` }));
    rows.push(el("div", {}, ...(a.capabilities || []).map((c) => el("span", { class: "chip", text: c }))));
    rows.push(el("div", { class: "row controls" }, pauseButton("agents", a.id, !!a.paused)));
    return el("div", { class: "agent", "data-agent": a.id, "data-state": a.state, "data-paused": a.paused ? "true" : "false" }, ...rows);
  });
  $("#agents").replaceChildren(...(cards.length ? cards : [el("p", { class: "muted", text: "No agents yet: agentcom-hub agent add NAME" })]));
}

function renderTasks() {
  const status = $("#filter-status").value;
  const text = $("#filter-text").value.trim().toLowerCase();
  const rows = [];
  const ids = [...S.tasks.keys()].sort().reverse();
  for (const id of ids) {
    const t = S.tasks.get(id);
    if (status && t.status !== status) continue;
    if (text && !`${t.title} ${t.id} ${t.assigned_to || ""}`.toLowerCase().includes(text)) continue;
    const r = t.result || {};
    const pr = safeUrl(r.pr_url);
    const links = el("td", {});
    if (pr) links.append(el("a", { href: pr, target: "_blank", rel: "noopener noreferrer", text: "PR", onclick: (e) => e.stopPropagation() }));
    if (r.branch) links.append(el("span", { class: "chip", title: "branch", text: r.branch }));
    rows.push(el("tr", { "data-id": t.id, "data-status": t.status, onclick: () => openDetail(t.id) },
      el("td", { class: "title" }, document.createTextNode(t.title), el("small", { text: t.id })),
      el("td", {}, badge(t.status), ...(t.status === "queued" && t.not_before ? [el("small", { class: "waits", "data-field": "waits", text: `waits until ${clock(t.not_before)}` })] : [])),
      el("td", { text: t.priority }),
      el("td", { text: t.assigned_to || "–" }), el("td", { text: String(t.generation) }),
      el("td", { text: ago(t.updated_at) }), links));
    if (rows.length >= ROWS) break;
  }
  $("#tasks tbody").replaceChildren(...rows);
}

function renderDead() {
  const dead = [...S.dead.values()].sort((a, b) => b.id.localeCompare(a.id));
  $("#dead-count").textContent = dead.length ? `(${dead.length})` : "";
  const items = dead.map((t) => el("li", { "data-id": t.id },
    el("div", { class: "what" }, document.createTextNode(t.title), el("small", { text: t.last_error || "" })),
    ...actionButtons(t)));
  $("#dead").replaceChildren(...(items.length ? items : [el("li", { class: "muted", text: "Nothing in the dead-letter list." })]));
}

function renderAlerts() {
  const out = [];
  const alert = (cls, kind, text) => out.push(el("div", { class: `alert ${cls}`, "data-kind": kind, text }));
  if (S.flash) alert("bad", "action", S.flash);
  if (!S.live) alert("bad", "stream", "Event stream disconnected; reconnecting…");
  for (const a of S.agents.values()) {
    const since = ms(a.state_since);
    if (a.state === "offline" && now() - since > OFFLINE_ALERT_MS) alert("bad", "offline", `Agent ${a.id} has been offline for ${dur(now() - since)}.`);
    if (a.state === "degraded") alert("warn", "degraded", `Agent ${a.id} is degraded until ${clock(a.degraded_until)}: ${a.degraded_reason || `${a.consecutive_failures} failures in a row`}.`);
    if (a.state === "stalled") alert("warn", "stalled", `Agent ${a.id} shows no activity on its task for ${dur(now() - since)}.`);
  }
  for (const t of S.tasks.values()) {
    if (t.status === "assigned" && now() - ms(t.updated_at) > UNACCEPTED_ALERT_MS) {
      alert("warn", "unaccepted", `Task "${t.title}" was assigned to ${t.assigned_to} ${ago(t.updated_at)} and is not accepted yet.`);
    }
  }
  const oldest = ms(S.snapshot.queue.oldest_queued_at);
  if (oldest && now() - oldest > OLDEST_QUEUED_ALERT_MS) {
    alert("warn", "oldest-queued", `The oldest queued task has waited ${dur(now() - oldest)} (${S.snapshot.queue.queued} queued).`);
  }
  // The hub's own alerts (newest first, one per kind and subject), while
  // what they say still holds.
  const seen = new Set();
  for (const a of S.hubAlerts) {
    const key = `${a.alert}\u0000${a.subject}`;
    if (seen.has(key)) continue;
    seen.add(key);
    let show;
    if (a.alert === "change_escalated") {
      const c = S.changes.get(a.subject);
      show = c ? c.status === "escalated" : now() - ms(a.at) < HUB_ALERT_MS;
    } else if (a.alert === "main_red") {
      const r = S.repos.get(a.subject);
      show = r ? r.health === "red" : now() - ms(a.at) < HUB_ALERT_MS;
    } else if (a.alert === "main_green") {
      show = false;
    } else if (a.alert === "agent_offline") {
      const ag = S.agents.get(a.subject);
      show = ag ? !ag.connected : now() - ms(a.at) < HUB_ALERT_MS;
    } else {
      show = now() - ms(a.at) < HUB_ALERT_MS;
    }
    if (!show) continue;
    const cls = a.alert === "main_red" || a.alert === "task_dead" ? "bad" : "warn";
    const node = el("div", { class: `alert ${cls}`, "data-kind": a.alert, "data-subject": a.subject, text: `${clock(a.at)} · ${a.message}` });
    if (a.alert === "change_escalated") {
      node.classList.add("link");
      node.title = "show the change";
      node.addEventListener("click", () => $(`.change[data-id="${CSS.escape(a.subject)}"]`)?.scrollIntoView({ block: "center" }));
    }
    out.push(node);
  }
  $("#alerts").replaceChildren(...out);
}

// ----- start ----------------------------------------------------------------------------------

async function boot() {
  $("#sign-in-form").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", signOut);
  $("#detail-close").addEventListener("click", closeDetail);
  $("#filter-status").addEventListener("change", schedule);
  $("#filter-text").addEventListener("input", schedule);
  $("#filter-change").addEventListener("change", () => { S.changesDirty = true; schedule(); });
  for (const stage of document.querySelectorAll(".stage")) {
    stage.addEventListener("click", () => {
      if (stage.dataset.changeStatus) {
        const cf = $("#filter-change");
        cf.value = cf.value === stage.dataset.changeStatus ? "" : stage.dataset.changeStatus;
        S.changesDirty = true;
        schedule();
        if (cf.value) $("#changes-card").scrollIntoView({ block: "start" });
        return;
      }
      const f = $("#filter-status");
      f.value = f.value === stage.dataset.status ? "" : stage.dataset.status;
      schedule();
    });
  }
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeDetail(); });
  // Ages and alerts tick every second; agents' heartbeats refresh every 5 s.
  setInterval(schedule, 1000);
  setInterval(async () => {
    if (!S.role) return;
    try {
      const a = await api("GET", "/api/agents");
      S.agents = new Map(a.agents.map((x) => [x.id, x]));
      refreshStateSoon();
    } catch (_) { /* the event stream reports trouble */ }
  }, 5000);
  const linked = tokenFromLink();
  if (linked) {
    await signInWith(linked);
    return;
  }
  try {
    const me = await api("GET", "/api/session");
    await signedIn(me.role);
  } catch (_) {
    showSignIn();
  }
}

document.addEventListener("DOMContentLoaded", boot);
