// The dashboard: sign-in, then the live overview (or a task's page, at #/task/<id>).
import { ApiError, get, token, whenUnauthorized } from "./api.js";
import { Feed } from "./feed.js";
import { renderTask } from "./task.js";
import { renderAgents, renderCharts, renderEndpoints, renderOverview, renderQueue, tickCountdowns } from "./views.js";

const $ = (id) => document.getElementById(id);
const PAGE = 50;
const REFRESH_MS = 700; // at most one refresh of the tables per this long, however busy the log
const CHARTS_MS = 3000;

// Exposed for the browser test (and for a curious operator's console).
const state = { role: null, offset: 0, skewMs: 0, marks: {}, feed: null, refreshes: 0 };
window.tierlog = state;

const now = () => Date.now() + state.skewMs;
const mark = (name) => { if (!(name in state.marks)) state.marks[name] = performance.now(); };

function setLive(on) {
  $("live").className = `live ${on ? "on" : "off"}`;
  $("live").textContent = on ? "live" : "reconnecting";
}

function showSignIn(message = "") {
  if (state.feed) state.feed.stop();
  state.feed = null;
  state.role = null;
  token.clear();
  $("signin").hidden = false;
  $("dashboard").hidden = true;
  $("task-page").hidden = true;
  $("who").hidden = $("signout").hidden = true;
  $("signin-error").textContent = message;
  setLive(false);
  $("live").textContent = "signed out";
}

async function signIn(candidate) {
  try {
    const me = await get("/v1/ui/whoami", { tokenOverride: candidate });
    token.set(candidate);
    state.role = me.role;
  } catch (error) {
    const why = error instanceof ApiError && error.status === 403 ? "This token cannot read the dashboard (an agent's token?)." : "Unknown token.";
    showSignIn(error instanceof ApiError ? why : "The server does not answer.");
    return;
  }
  $("signin").hidden = true;
  $("who").hidden = $("signout").hidden = false;
  $("who").textContent = state.role === "admin" ? "operator" : "viewer (read-only)";
  state.feed = new Feed($("feed"), $("feed-filter"), setLive);
  state.feed.onBatch((events) => {
    scheduleRefresh();
    const shown = currentTask();
    if (shown && events.some((e) => e.task_id === shown)) scheduleTaskRefresh(shown);
  });
  state.feed.start();
  route();
}

// --- refreshing the tables -------------------------------------------------------------
let refreshTimer = null;
let lastRefresh = 0;
let refreshing = false;
let lastCharts = -Infinity;

function scheduleRefresh() {
  if (refreshTimer !== null) return;
  const wait = Math.max(0, lastRefresh + REFRESH_MS - performance.now());
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    if (refreshing) { scheduleRefresh(); return; }
    await refresh();
  }, wait);
}

async function refresh() {
  if (!state.role || $("dashboard").hidden) return;
  refreshing = true;
  lastRefresh = performance.now();
  try {
    const [overview, queue, agents, endpoints] = await Promise.all([
      get("/v1/ui/overview"),
      get(`/v1/ui/queue?offset=${state.offset}&limit=${PAGE}`),
      get("/v1/ui/agents"),
      get("/v1/ui/endpoints"),
    ]);
    state.skewMs = new Date(overview.now).getTime() - Date.now();
    renderOverview($("overview"), overview);
    if (queue.offset === state.offset) renderQueueCard(queue); // not a page left meanwhile
    renderAgents($("agents"), agents.agents, now());
    renderEndpoints($("endpoints"), endpoints);
    $("score-note").textContent = endpoints.standard_target === "ollama" ? "score: a standard task, now" : `standard tasks go to ${endpoints.standard_target}`;
    mark("tables");
    state.refreshes += 1;
    if (performance.now() - lastCharts > CHARTS_MS) {
      lastCharts = performance.now();
      const [routing, telemetry] = await Promise.all([get("/v1/ui/routing"), get("/v1/telemetry")]);
      state.chartData = [routing, telemetry.telemetry];
      drawCharts();
    }
  } catch (error) {
    console.error("refresh failed:", error);
    setLive(false);
  } finally {
    refreshing = false;
  }
}

function drawCharts() {
  if (!state.chartData) return;
  const svgs = { routing: $("chart-routing"), timers: $("chart-timers"), wait: $("chart-wait"), assign: $("chart-assign") };
  renderCharts(svgs, ...state.chartData);
  mark("charts");
}

function renderQueueCard(queue) {
  if (queue.total > 0 && state.offset >= queue.total) {
    state.offset = Math.max(0, Math.floor((queue.total - 1) / PAGE) * PAGE);
  }
  renderQueue($("queue"), queue, now());
  const last = Math.min(queue.total, queue.offset + queue.tasks.length);
  $("queue-count").textContent = `${queue.total.toLocaleString("en-US")} waiting`;
  $("queue-range").textContent = queue.total ? `${queue.offset + 1}–${last} of ${queue.total.toLocaleString("en-US")}` : "";
  $("queue-prev").disabled = queue.offset === 0;
  $("queue-next").disabled = last >= queue.total;
  mark("queue");
}

// Paging fetches the queue alone: a click is answered by one query, however busy.
async function page(delta) {
  state.offset = Math.max(0, state.offset + delta * PAGE);
  try {
    renderQueueCard(await get(`/v1/ui/queue?offset=${state.offset}&limit=${PAGE}`));
  } catch (error) {
    console.error("queue page failed:", error);
  }
}

// --- the two pages -------------------------------------------------------------------------
function currentTask() {
  const match = location.hash.match(/^#\/task\/([0-9a-fA-F-]{36})$/);
  return match ? match[1] : null;
}

let taskTimer = null;
function scheduleTaskRefresh(taskId) {
  if (taskTimer !== null) return;
  taskTimer = setTimeout(() => {
    taskTimer = null;
    if (currentTask() === taskId) renderTask($("task-page"), taskId, state.role);
  }, 300);
}

function route() {
  if (!state.role) return;
  const match = location.hash.match(/^#\/task\/([0-9a-fA-F-]{36})$/);
  $("dashboard").hidden = Boolean(match);
  $("task-page").hidden = !match;
  if (match) {
    renderTask($("task-page"), match[1], state.role);
  } else {
    lastCharts = -Infinity;
    refresh();
  }
}

function start() {
  whenUnauthorized(() => showSignIn("The token is no longer accepted."));
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token").value.trim());
    $("token").value = "";
  });
  $("signout").addEventListener("click", () => showSignIn());
  $("queue-prev").addEventListener("click", () => page(-1));
  $("queue-next").addEventListener("click", () => page(1));
  window.addEventListener("hashchange", route);
  setInterval(() => tickCountdowns(document, now()), 1000);
  // The charts follow the page's width.
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(drawCharts, 100);
  });
  const kept = token.get();
  if (kept) signIn(kept);
  else showSignIn();
}

start();
