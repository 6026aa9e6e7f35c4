// The dashboard's tables and cards, drawn from the /v1/ui reads.
import { bars, PALETTE } from "./charts.js";
import { ago, bytes, clockTime, countdown, fillBody, h, number, pill, taskLink } from "./dom.js";

const TIERS = ["trivial", "standard", "complex"];
const PRIORITIES = ["urgent", "high", "normal", "low"];

function card(title, ...body) {
  return h("div", { class: "card" }, h("h3", {}, title), ...body);
}

function kv(pairs) {
  return h("div", { class: "kv" }, pairs.flatMap(([k, v]) => [h("span", {}, k), h("span", {}, number(v))]));
}

export function renderOverview(root, o) {
  const queued = o.queue.reduce((sum, r) => sum + r.count, 0);
  const byTier = TIERS.map((tier) => [tier, o.queue.filter((r) => r.tier === tier).reduce((s, r) => s + r.count, 0)]);
  const byPriority = PRIORITIES.map((p) => [p, o.queue.filter((r) => r.priority === p).reduce((s, r) => s + r.count, 0)]);
  const states = Object.entries(o.tasks_by_state).map(([state, tiers]) => [state, Object.values(tiers).reduce((a, b) => a + b, 0)]);
  const lag = Object.entries(o.projection_lag);
  root.replaceChildren(
    card("Log head", h("div", { class: "big", id: "log-head" }, number(o.log_head)),
      h("div", { class: "muted" }, "read models behind by"),
      kv(lag.length ? lag : [["read models", 0]])),
    card("Queue", h("div", { class: "big", id: "queued-total" }, number(queued)),
      h("div", { class: "muted" }, `waiting · ${number(o.timers_pending)} on a timer`),
      kv(byTier.filter(([, n]) => n > 0)), h("hr"), kv(byPriority.filter(([, n]) => n > 0))),
    card("Tasks by state", kv(states.length ? states : [["none yet", 0]])),
    card("Agents", kv(Object.entries(o.agents).length ? Object.entries(o.agents) : [["registered", 0]])),
    card("Endpoints", kv([["healthy", o.endpoints.healthy || 0], ["unhealthy", o.endpoints.unhealthy || 0],
      ...Object.entries(o.endpoints).filter(([k]) => k !== "healthy" && k !== "unhealthy")])),
  );
}

function tierCell(task) {
  if (task.effective_tier !== task.tier) return h("span", {}, `${task.effective_tier} `, h("span", { class: "muted" }, `(from ${task.tier})`));
  return task.tier;
}

export function renderQueue(table, page, now) {
  const rows = page.tasks.map((t) => h("tr", { dataset: { task: t.task_id } },
    h("td", {}, taskLink(t.task_id), h("div", { class: "muted" }, t.description.slice(0, 60))),
    h("td", {}, pill(t.priority)),
    h("td", {}, tierCell(t)),
    h("td", {}, t.timer_fires_at
      ? h("span", { class: "countdown", dataset: { firesAt: t.timer_fires_at } }, countdown(t.timer_fires_at, now))
      : h("span", { class: "muted" }, "—")),
    h("td", { class: "reason" }, t.waiting_reason)));
  fillBody(table, rows, 5, "The queue is empty.");
}

export function tickCountdowns(root, now) {
  for (const node of root.querySelectorAll("[data-fires-at]")) node.textContent = countdown(node.dataset.firesAt, now);
}

export function renderAgents(table, list, now) {
  const rows = list.map((a) => h("tr", {},
    h("td", {}, h("span", { class: "mono" }, a.agent_id)),
    h("td", {}, pill(a.status)),
    h("td", {}, taskLink(a.task_id)),
    h("td", { class: "num" }, a.lease_expires_at ? clockTime(a.lease_expires_at) : "—"),
    h("td", { class: "num" }, ago(a.last_seen, now))));
  fillBody(table, rows, 5, "No agent is registered.");
}

const percent = (n) => (n === null || n === undefined ? "—" : `${Number(n).toFixed(0)} %`);
const usage = (used, total) => (total ? `${bytes(used)} / ${bytes(total)}` : "—");

export function renderEndpoints(table, data) {
  const rows = data.endpoints.map((e) => {
    const r = e.resources || {};
    return h("tr", {},
      h("td", {}, h("span", { class: "mono" }, e.endpoint_id)),
      h("td", {}, pill(e.status)),
      h("td", {}, (e.models || []).join(", ") || "—"),
      h("td", { class: "num" }, percent(r.cpu_percent)),
      h("td", { class: "num" }, usage(r.ram_used_bytes, r.ram_total_bytes)),
      h("td", { class: "num" }, usage(r.vram_used_bytes, r.vram_total_bytes)),
      h("td", { class: "num score" }, e.score === null ? "—" : e.score.toFixed(3)));
  });
  fillBody(table, rows, 7, "No endpoint is registered.");
}

function histogram(svg, data, title) {
  const labels = Object.keys(data.buckets);
  bars(svg, {
    categories: labels.map((k) => (k === "le_inf" ? "more" : `≤${Number(k.slice(3)) >= 1000 ? `${Number(k.slice(3)) / 1000}s` : `${k.slice(3)}ms`}`)),
    series: [{ name: title, values: labels.map((k) => data.buckets[k]), color: PALETTE[0] }],
    yUnit: "tasks",
    xUnit: `upper bound · ${number(data.count)} measured`,
  });
}

// Every bucket from the first with decisions to the last (at least 12), so time runs evenly.
function timeSlots(routing) {
  const step = routing.bucket_s * 1000;
  const starts = routing.buckets.map((b) => Date.parse(b.start));
  const last = starts.length ? Math.max(...starts) : Math.floor(Date.now() / step) * step;
  const first = Math.min(starts.length ? Math.min(...starts) : last, last - 11 * step);
  const slots = [];
  for (let t = first; t <= last; t += step) slots.push(t);
  return slots;
}

export function renderCharts(charts, routing, telemetry) {
  const keys = [...new Set(routing.buckets.flatMap((b) => Object.keys(b.counts)))].sort();
  const slots = timeSlots(routing);
  bars(charts.routing, {
    categories: slots.map((slot) => clockTime(new Date(slot).toISOString())),
    series: keys.map((key) => ({ name: key.replace("->", " → "), values: slots.map((slot) => (routing.buckets.find((b) => Date.parse(b.start) === slot) || { counts: {} }).counts[key] || 0) })),
    yUnit: `decisions / ${routing.bucket_s} s`,
    xUnit: "time",
    legend: true,
  });
  const timers = telemetry.timers;
  const byReason = (value) => (typeof value === "number" ? (value ? { "": value } : {}) : value || {});
  const outcomes = [["started", byReason(timers.started)], ["fired", byReason(timers.fired)], ["cancelled", byReason(timers.cancelled)]];
  const categories = [];
  const values = [];
  for (const [outcome, reasons] of outcomes) {
    const entries = Object.entries(reasons);
    if (!entries.length) { categories.push(outcome); values.push(0); }
    for (const [reason, n] of entries) { categories.push(reason ? `${outcome}: ${reason}` : outcome); values.push(n); }
  }
  bars(charts.timers, { categories, series: [{ name: "timers", values, color: PALETTE[2] }], yUnit: "timers", xUnit: "outcome" });
  histogram(charts.wait, telemetry.fallback_wait_ms, "fallback wait");
  histogram(charts.assign, telemetry.submit_to_assign_ms, "submit → assign");
}
