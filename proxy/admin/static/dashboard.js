// egressguard's dashboard: plain DOM and inline SVG, fed by the admin API with the token the operator
// typed (kept in sessionStorage, sent as a bearer header). Every value from the audit log is agent- or
// upstream-controlled text, so it is only ever set as textContent, never parsed as HTML.
"use strict";

const API = "/api/v1";
const THREATS = ["prompt_injection", "jailbreak", "tool_abuse", "data_exfiltration", "context_poisoning",
  "credential_theft", "lateral_movement", "compliance_gap"];
const COLORS = { prompt_injection: "#c62828", jailbreak: "#8e24aa", tool_abuse: "#ef6c00",
  data_exfiltration: "#1565c0", context_poisoning: "#6d4c41", credential_theft: "#ad1457",
  lateral_movement: "#00838f", compliance_gap: "#7c8595" };
const SEVERITIES = ["critical", "high", "medium", "low"];
const DECISIONS = ["blocked", "redacted", "allowed"];
const FEED_KEPT = 300;
const POLL_MS = { now: 3000, lists: 2000, history: 30000, drill: 60000 };

const state = {
  token: sessionStorage.getItem("egressguard.token") || "",
  operator: sessionStorage.getItem("egressguard.operator") || "",
  canAct: false,
  window: "1h",
  feed: [],
  seen: new Set(),
  openTurn: null,
  now: null,
  drill: null,
  timers: [],
  stream: null,
};

// -- small DOM helpers ----------------------------------------------------------------------------------

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attributes, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function $(selector) { return document.querySelector(selector); }

function fill(container, ...children) { container.replaceChildren(...children.flat(Infinity)); }

function clock(ts) { return ts ? new Date(ts).toLocaleTimeString([], { hour12: false }) : ""; }

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} days`;
}

function chip(threat, text) {
  const node = el("span", { class: "chip", title: threat }, text || threat.replace("_", " "));
  node.style.background = COLORS[threat] || "#555";
  return node;
}

// -- the API --------------------------------------------------------------------------------------------

class Refused extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${state.token}`, "Content-Type": "application/json" },
  });
  if (response.status === 401) {
    signOut("The token was refused.");
    throw new Refused("401");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
  return body;
}

// -- sign in --------------------------------------------------------------------------------------------

async function signIn(event) {
  if (event) event.preventDefault();
  if (!state.token) {
    state.token = $("#token").value.trim();
    state.operator = $("#operator").value.trim();
  }
  if (!state.token) return;
  let session;
  try {
    session = await api(`${API}/dashboard/session`);
  } catch (error) {
    if (!(error instanceof Refused)) $("#signin-error").textContent = String(error.message || error);
    return;
  }
  sessionStorage.setItem("egressguard.token", state.token);
  sessionStorage.setItem("egressguard.operator", state.operator);
  state.canAct = session.can_act;
  $("#signin").hidden = true;
  $("#app").hidden = false;
  $("#tabs").hidden = false;
  $("#window").hidden = false;
  $("#signout").hidden = false;
  $("#who").textContent = `${state.operator || "unnamed"} · ${session.access === "full" ? "full token" : "read-only"}`;
  start();
}

function signOut(message) {
  sessionStorage.removeItem("egressguard.token");
  state.token = "";
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  if (state.stream) state.stream.abort();
  state.stream = null;
  $("#app").hidden = true;
  $("#tabs").hidden = true;
  $("#window").hidden = true;
  $("#signout").hidden = true;
  $("#who").textContent = "";
  $("#signin").hidden = false;
  $("#signin-error").textContent = message || "";
  $("#token").value = "";
}

function start() {
  refreshNow();
  refreshDrill();
  refreshLists();
  refreshHistory();
  loadFeed();
  follow();
  state.timers.push(setInterval(refreshNow, POLL_MS.now));
  state.timers.push(setInterval(refreshDrill, POLL_MS.drill));
  state.timers.push(setInterval(refreshLists, POLL_MS.lists));
  state.timers.push(setInterval(refreshHistory, POLL_MS.history));
}

function quietly(work) {
  return async (...args) => {
    try { await work(...args); } catch (error) { if (!(error instanceof Refused)) console.warn(error); }
  };
}

// -- now ------------------------------------------------------------------------------------------------

function tile(label, value, note, level) {
  return el("div", { class: `tile ${level || ""}`, "data-tile": label },
    el("div", { class: "label" }, label), el("div", { class: "value" }, value), el("div", { class: "note" }, note || ""));
}

const refreshNow = quietly(async () => {
  state.now = await api(`${API}/dashboard/now`);
  renderNow();
});

const refreshDrill = quietly(async () => {
  state.drill = await api(`${API}/dashboard/drill`);
  renderNow();
});

function renderNow() {
  const now = state.now;
  if (!now || !state.drill) return;
  const hour = now.last_hour;
  const mode = $("#mode");
  mode.textContent = `${now.mode} mode`;
  mode.className = `badge ${now.mode}`;
  const failing = now.alerts.failing_destinations;
  const drill = state.drill.last_drill;
  const drillLevel = !drill ? "warn" : !drill.passed ? "bad" : drill.age_s > 30 * 86400 ? "warn" : "";
  fill($("#now"),
    tile("turns / s", now.turns_per_second.toFixed(2), `${hour.turns} in the last hour`),
    tile("blocked", hour.blocked, "last hour", hour.blocked ? "bad" : ""),
    tile("redacted", hour.redacted, "last hour", hour.redacted ? "warn" : ""),
    tile("active agents", hour.active_agents.length, hour.active_agents.join(", ") || "none in 5 min"),
    tile("alert deliveries failing", now.alerts.enabled ? failing.length : "–",
      now.alerts.enabled ? (failing.join(", ") || `${now.alerts.waiting} waiting`) : "no alert router",
      failing.length ? "bad" : ""),
    tile("audit log", now.audit.health === "ok" ? "healthy" : "failing", now.audit.health,
      now.audit.health === "ok" ? "" : "bad"),
    tile("last drill", drill ? (drill.passed ? "passed" : "failed") : "none",
      drill ? `${ago(drill.age_s)} ago` : `no drill in ${state.drill.window_days} days`, drillLevel));
}

// -- approvals and freezes ------------------------------------------------------------------------------

async function act(button, path, body) {
  button.disabled = true;
  try {
    await api(path, { method: "POST", body: JSON.stringify({ ...body, by: state.operator || "dashboard" }) });
  } catch (error) {
    if (!(error instanceof Refused)) alert(error.message);
  }
  await refreshLists();
}

function actionButton(label, kind, onclick) {
  return el("button", {
    type: "button", class: `act ${kind}`, onclick, disabled: !state.canAct,
    title: state.canAct ? null : "needs the full admin token",
  }, label);
}

const refreshLists = quietly(async () => {
  const [approvals, freezes] = await Promise.all([
    api(`${API}/approvals?status=pending`), api(`${API}/freezes`)]);
  const now = Date.now() / 1000;
  const pending = approvals.approvals;
  fill($("#approvals tbody"), pending.map((approval) => el("tr", { "data-approval": approval.id },
    el("td", {}, el("code", {}, approval.summary), el("div", { class: "muted" }, approval.id)),
    el("td", {}, approval.agent_id),
    el("td", {}, approval.user_id || "–"),
    el("td", {}, ago(now - approval.created)),
    el("td", {},
      actionButton("approve", "approve", (e) => act(e.target, `${API}/approvals/${approval.id}/approve`, {})),
      actionButton("deny", "deny", (e) => act(e.target, `${API}/approvals/${approval.id}/deny`, {}))))));
  $("#approvals-empty").hidden = pending.length > 0;
  $("#approvals-count").textContent = pending.length || "";
  const frozen = freezes.freezes;
  fill($("#freezes tbody"), frozen.map((entry) => el("tr", { "data-freeze": `${entry.kind}:${entry.identity}` },
    el("td", {}, entry.kind),
    el("td", {}, entry.identity),
    el("td", {}, entry.reason),
    el("td", {}, ago(entry.until - now)),
    el("td", {}, actionButton("lift", "lift", (e) => act(e.target, `${API}/freezes/lift`,
      { kind: entry.kind, identity: entry.identity }))))));
  $("#freezes-empty").hidden = frozen.length > 0;
  $("#freezes-count").textContent = frozen.length || "";
});

// -- charts ---------------------------------------------------------------------------------------------

const W = 640, H = 190, LEFT = 58, BOTTOM = 22, TOP = 8;

function buckets(chart) {
  const step = chart.bucket_s * 1000;
  const first = Math.floor(Date.parse(chart.since) / step) * step;
  const last = Date.parse(chart.now);
  const times = [];
  for (let t = first; t <= last; t += step) times.push(t);
  return times;
}

function axes(times, max, unit) {
  const parts = [];
  for (const fraction of [0, 0.5, 1]) {
    const y = TOP + (H - TOP - BOTTOM) * (1 - fraction);
    parts.push(svg("line", { x1: LEFT, x2: W, y1: y, y2: y, stroke: "#e4e7ee" }));
    parts.push(svg("text", { x: LEFT - 4, y: y + 4, "text-anchor": "end" }, `${+(max * fraction).toFixed(1)}${unit}`));
  }
  const ticks = 6;
  for (let i = 0; i <= ticks; i++) {
    const index = Math.round((times.length - 1) * i / ticks);
    const x = LEFT + (W - LEFT) * (index + 0.5) / times.length;
    const label = new Date(times[index]).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
    const anchor = i === 0 ? "start" : i === ticks ? "end" : "middle";
    parts.push(svg("text", { x: i === ticks ? W : x, y: H - 6, "text-anchor": anchor }, label));
  }
  return parts;
}

function legend(entries) {
  return el("div", { class: "legend" }, entries.map(([name, color, note]) => {
    const node = el("span", {}, `${name.replace("_", " ")} ${note}`);
    node.style.setProperty("--swatch", color);
    return node;
  }));
}

function findingsChart(chart) {
  const times = buckets(chart);
  const index = new Map(times.map((t, i) => [t, i]));
  const stacks = times.map(() => ({}));
  const totals = {};
  for (const row of chart.findings) {
    const i = index.get(Date.parse(row.bucket));
    if (i === undefined) continue;
    stacks[i][row.threat] = (stacks[i][row.threat] || 0) + row.findings;
    totals[row.threat] = (totals[row.threat] || 0) + row.findings;
  }
  const max = Math.max(1, ...stacks.map((s) => Object.values(s).reduce((a, b) => a + b, 0)));
  const width = (W - LEFT) / times.length;
  const bars = [];
  stacks.forEach((stack, i) => {
    let y = H - BOTTOM;
    for (const threat of THREATS) {
      if (!stack[threat]) continue;
      const height = (H - TOP - BOTTOM) * stack[threat] / max;
      y -= height;
      bars.push(svg("rect", { x: LEFT + i * width + 1, y, width: Math.max(1, width - 2), height,
        fill: COLORS[threat] }, svg("title", {}, `${threat}: ${stack[threat]} at ${clock(times[i])}`)));
    }
  });
  const used = THREATS.filter((threat) => totals[threat]);
  fill($("#chart-findings"),
    svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "findings by threat" }, axes(times, max, ""), bars),
    used.length ? legend(used.map((t) => [t, COLORS[t], totals[t]])) : el("p", { class: "empty" }, "No findings in this window."));
}

function latencyChart(chart) {
  const times = buckets(chart);
  const index = new Map(times.map((t, i) => [t, i]));
  const series = { own_ms: ["egressguard", "#c62828"], upstream_ms: ["upstream", "#2458c6"] };
  const points = { own_ms: [], upstream_ms: [] };
  for (const row of chart.latency) {
    const i = index.get(Date.parse(row.bucket));
    if (i === undefined) continue;
    for (const key of Object.keys(series)) if (row[key] !== null) points[key].push([i, row[key]]);
  }
  const max = Math.max(1, ...Object.values(points).flat().map(([, v]) => v));
  const width = (W - LEFT) / times.length;
  const x = (i) => LEFT + width * (i + 0.5);
  const y = (v) => TOP + (H - TOP - BOTTOM) * (1 - v / max);
  const lines = Object.entries(points).flatMap(([key, list]) => {
    if (!list.length) return [];
    const d = list.map(([i, v], n) => `${n ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    return [svg("path", { d, fill: "none", stroke: series[key][1], "stroke-width": 2 }),
      ...list.map(([i, v]) => svg("circle", { cx: x(i), cy: y(v), r: 2.5, fill: series[key][1] },
        svg("title", {}, `${series[key][0]}: ${v} ms at ${clock(times[i])}`)))];
  });
  const mean = (list) => list.length ? (list.reduce((a, [, v]) => a + v, 0) / list.length).toFixed(1) : "–";
  fill($("#chart-latency"),
    svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "latency" }, axes(times, max, " ms"), lines),
    legend(Object.entries(series).map(([key, [name, color]]) => [name, color, `${mean(points[key])} ms`])));
}

// -- agents ---------------------------------------------------------------------------------------------

function sparkline(threats, bucketSeconds, since) {
  const start = Date.parse(since);
  const count = Math.max(1, Math.round((Date.now() - start) / 1000 / bucketSeconds));
  const width = 380, height = 44, step = width / count;
  const perBucket = new Map();
  for (const row of threats) {
    const i = Math.floor((Date.parse(row.bucket) - start) / 1000 / bucketSeconds);
    const bucket = perBucket.get(i) || {};
    bucket[row.threat] = (bucket[row.threat] || 0) + row.findings;
    perBucket.set(i, bucket);
  }
  const max = Math.max(1, ...[...perBucket.values()].map((b) => Object.values(b).reduce((a, c) => a + c, 0)));
  const bars = [];
  for (const [i, bucket] of perBucket) {
    let y = height;
    for (const threat of THREATS) {
      if (!bucket[threat]) continue;
      const h = height * bucket[threat] / max;
      y -= h;
      bars.push(svg("rect", { x: Math.max(0, i) * step, y, width: Math.max(1.5, step - 1), height: h, fill: COLORS[threat] },
        svg("title", {}, `${threat}: ${bucket[threat]}`)));
    }
  }
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "findings over time" },
    svg("line", { x1: 0, x2: width, y1: height - 0.5, y2: height - 0.5, stroke: "#dde1e8" }), bars);
}

function percent(rate) { return rate === null || rate === undefined ? "–" : `${(rate * 100).toFixed(1)} %`; }

function agentCard(agent, data) {
  const threats = {};
  for (const row of agent.threats) threats[row.threat] = (threats[row.threat] || 0) + row.findings;
  const frozen = agent.frozen;
  const drop = agent.baseline_refusal_rate && agent.refusal_rate !== null
    ? (agent.baseline_refusal_rate - agent.refusal_rate) / agent.baseline_refusal_rate : null;
  return el("section", { class: "panel card", "data-agent": agent.agent_id },
    el("h2", {}, agent.agent_id, frozen.agent ? el("span", { class: "frozen" }, "blocked") : null,
      el("span", { class: "muted" }, `last seen ${clock(agent.last_seen)}`)),
    el("div", { class: "stats" },
      el("span", {}, el("b", {}, agent.turns), " turns"),
      el("span", {}, el("b", {}, agent.blocked), " blocked"),
      el("span", {}, el("b", {}, agent.redacted), " redacted"),
      el("span", {}, el("b", {}, agent.findings || 0), " findings"),
      el("span", { title: "share of completions judged that were refusals, against the 7 days before" },
        "refusals ", el("b", {}, percent(agent.refusal_rate)), ` vs ${percent(agent.baseline_refusal_rate)} baseline`,
        drop !== null && drop > 0.3 ? el("span", { class: "frozen" }, " dropped") : null)),
    el("h3", {}, "findings by threat over time"),
    sparkline(agent.threats, data.bucket_s, data.since),
    el("div", {}, Object.entries(threats).map(([threat, n]) => chip(threat, `${threat.replace("_", " ")} ${n}`))),
    el("h3", {}, "hosts reached"),
    el("div", {}, agent.hosts.length ? agent.hosts.map((host) => el("div", { "data-host": host.host },
      host.host, ` · ${host.turns}`, host.first_seen ? el("span", { class: "new", title: `first seen ${host.first_seen}` }, "FIRST SEEN") : null))
      : el("span", { class: "muted" }, "none")),
    el("h3", {}, "tools called"),
    el("div", {}, agent.tools.length ? agent.tools.map((tool) => `${tool.tool} ×${tool.calls}`).join(", ") : el("span", { class: "muted" }, "none")),
    el("h3", {}, "frozen users and sessions"),
    el("div", {}, [...frozen.users.map((u) => `user ${u}`), ...frozen.sessions.map((s) => `session ${s}`)].join(", ")
      || el("span", { class: "muted" }, "none")));
}

const refreshHistory = quietly(async () => {
  const [chart, agents] = await Promise.all([
    api(`${API}/dashboard/charts?window=${state.window}`), api(`${API}/dashboard/agents?window=${state.window}`)]);
  findingsChart(chart);
  latencyChart(chart);
  fill($("#agents"), agents.agents.length ? agents.agents.map((agent) => agentCard(agent, agents))
    : el("p", { class: "empty" }, "No agent sent a turn in this window."));
  const select = $("#filters select[name=agent]");
  const chosen = select.value;
  fill(select, el("option", { value: "" }, "any"), agents.agents.map((a) => el("option", { value: a.agent_id }, a.agent_id)));
  select.value = chosen;
});

// -- the live feed --------------------------------------------------------------------------------------

function filters() {
  const form = new FormData($("#filters"));
  return { agent: form.get("agent"), threat: form.get("threat"), severity: form.get("severity"),
    decision: form.get("decision"), findings: form.get("findings") === "on" };
}

function matches(turn, wanted) {
  if (wanted.agent && turn.agent_id !== wanted.agent) return false;
  if (wanted.decision && turn.decision !== wanted.decision) return false;
  if (wanted.threat && !turn.findings.some((f) => f.threat === wanted.threat)) return false;
  if (wanted.severity && !turn.findings.some((f) => f.severity === wanted.severity)) return false;
  if (wanted.findings && !turn.findings.length) return false;
  return true;
}

// A line of the log that does not verify in its hash chain is shown with a warning, never as genuine.
function unverified(turn) {
  return turn.verified === true ? "" : el("span", { class: "unverified-mark", title: turn.chain_problem || "" }, " ⚠ not verified");
}

function feedRow(turn, fresh) {
  const threats = [...new Set(turn.findings.map((f) => f.threat))];
  return el("tr", { "data-event": turn.event_id,
    class: `${fresh ? "fresh" : ""} ${state.openTurn === turn.event_id ? "open" : ""} ${turn.verified === true ? "" : "unverified"}`,
    onclick: () => openTurn(turn.event_id) },
  el("td", {}, clock(turn.ts), unverified(turn)),
  el("td", {}, turn.agent_id),
  el("td", {}, turn.user_id || "–"),
  el("td", {}, turn.egress_host || ""),
  el("td", { class: `decision ${turn.decision}` }, turn.decision),
  el("td", {}, threats.map((t) => chip(t)), turn.findings.length ? ` ${turn.findings.length}` : ""),
  el("td", {}, turn.latency_ms === null ? "" : Math.round(turn.latency_ms)));
}

function renderLatest() {
  const latest = state.feed.filter((turn) => turn.findings.length).slice(0, 8);
  fill($("#latest tbody"), latest.map((turn) => el("tr", { "data-event": turn.event_id,
    onclick: () => { show("feed"); openTurn(turn.event_id); } },
  el("td", {}, clock(turn.ts), unverified(turn)), el("td", {}, turn.agent_id), el("td", { class: `decision ${turn.decision}` }, turn.decision),
  el("td", {}, [...new Set(turn.findings.map((f) => f.threat))].map((t) => chip(t))))));
  $("#latest-empty").hidden = latest.length > 0;
}

function renderFeed(freshId) {
  renderLatest();
  const wanted = filters();
  const shown = state.feed.filter((turn) => matches(turn, wanted));
  fill($("#feed tbody"), shown.map((turn) => feedRow(turn, turn.event_id === freshId)));
  $("#feed-count").textContent = `${shown.length} of ${state.feed.length} recent turns`;
}

function addTurn(turn, fresh) {
  if (!turn.event_id || state.seen.has(turn.event_id)) return;
  state.seen.add(turn.event_id);
  state.feed.unshift(turn);
  state.feed.sort((a, b) => (a.ts < b.ts ? 1 : a.ts > b.ts ? -1 : 0));
  for (const dropped of state.feed.splice(FEED_KEPT)) state.seen.delete(dropped.event_id);
  if (fresh) renderFeed(turn.event_id);
}

const loadFeed = quietly(async () => {
  const wanted = filters();
  const query = new URLSearchParams({ window: state.window, limit: String(FEED_KEPT) });
  for (const key of ["agent", "threat", "severity", "decision"]) if (wanted[key]) query.set(key, wanted[key]);
  const history = await api(`${API}/dashboard/turns?${query}`);
  for (const turn of history.turns) addTurn(turn, false);
  renderFeed(null);
});

async function follow() {
  const controller = new AbortController();
  state.stream = controller;
  const live = $("#live");
  try {
    const response = await fetch(`${API}/dashboard/feed`, {
      headers: { Authorization: `Bearer ${state.token}` }, signal: controller.signal });
    if (response.status === 401) { signOut("The token was refused."); return; }
    if (!response.ok || !response.body) throw new Error(`feed: HTTP ${response.status}`);
    live.className = "live on";
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const name = (block.match(/^event: (.*)$/m) || [])[1];
        const data = (block.match(/^data: (.*)$/m) || [])[1];
        if (name === "turn" && data) addTurn(JSON.parse(data), true);
        else if (name === "gap") loadFeed();
      }
    }
  } catch (error) {
    if (controller.signal.aborted) return;
    console.warn(error);
  }
  live.className = "live off";
  if (state.stream === controller && state.token) setTimeout(() => { if (state.stream === controller) follow(); }, 2000);
}

// -- one turn -------------------------------------------------------------------------------------------

const RECORD_FIELDS = ["event_id", "ts", "agent_id", "role", "user_id", "session_id", "purpose", "consent_id",
  "approval_id", "egress_host", "method", "path", "status", "dialect", "model", "stream", "latency_ms",
  "upstream_ms", "tokens_in", "tokens_out", "tools", "decision", "mode", "input_sha256", "output_sha256",
  "prev_hash", "hash"];

const openTurn = quietly(async (eventId) => {
  state.openTurn = eventId;
  for (const row of document.querySelectorAll("#feed tbody tr")) row.classList.toggle("open", row.dataset.event === eventId);
  const detail = $("#detail");
  fill(detail, el("h2", {}, "Turn ", el("code", {}, eventId)), el("p", { class: "muted" }, "loading…"));
  const found = await api(`${API}/dashboard/turns/${encodeURIComponent(eventId)}`);
  const record = found.record;
  const described = new Map(found.rules.map((rule) => [rule.id, rule.description]));
  fill(detail,
    el("h2", {}, "Turn ", el("code", {}, eventId)),
    found.verified === true ? "" : el("p", { class: "chain-warning", role: "alert" },
      "This record does not verify against the audit log's hash chain: it may have been altered. ",
      found.chain_problem || ""),
    el("h3", {}, "Why"),
    el("ul", { class: "why" }, found.why.map((line) => el("li", {}, line))),
    el("h3", {}, "Rules"),
    (record.findings || []).length ? el("div", { class: "rules" }, record.findings.map((f) => el("div", { class: "rule", "data-rule": f.rule },
      el("div", {}, chip(f.threat), " ", el("code", {}, f.rule)),
      el("div", { class: "muted" }, `${f.severity} · ${f.action}${f.enforced ? " (enforced)" : " (observed)"} · ${f.where}`),
      el("div", { class: "description" }, described.get(f.rule) || f.signal || ""))))
      : el("p", { class: "muted" }, "No rule matched."),
    el("h3", {}, "Audit record (hashes, never text)"),
    el("dl", {}, RECORD_FIELDS.filter((name) => record[name] !== undefined && record[name] !== null).map((name) =>
      [el("dt", {}, name), el("dd", {}, Array.isArray(record[name]) ? record[name].join(", ") || "–" : String(record[name]))])));
});

// -- wiring ---------------------------------------------------------------------------------------------

function show(view) {
  for (const section of document.querySelectorAll("main > .view")) section.hidden = section.dataset.view !== view;
  for (const button of document.querySelectorAll("#tabs button")) button.classList.toggle("active", button.dataset.view === view);
}

document.addEventListener("DOMContentLoaded", () => {
  const options = { threat: THREATS, severity: SEVERITIES, decision: DECISIONS };
  for (const [name, values] of Object.entries(options)) {
    $(`#filters select[name=${name}]`).append(...values.map((v) => el("option", { value: v }, v.replace("_", " "))));
  }
  $("#signin-form").addEventListener("submit", signIn);
  $("#signout").addEventListener("click", () => signOut(""));
  for (const button of document.querySelectorAll("#tabs button")) button.addEventListener("click", () => show(button.dataset.view));
  for (const button of document.querySelectorAll("#window button")) {
    button.addEventListener("click", () => {
      state.window = button.dataset.window;
      for (const other of document.querySelectorAll("#window button")) other.classList.toggle("active", other === button);
      refreshHistory();
      loadFeed();
    });
  }
  $("#filters").addEventListener("change", () => { renderFeed(null); loadFeed(); });
  if (state.token) signIn(null);
});
