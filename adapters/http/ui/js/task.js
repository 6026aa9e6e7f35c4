// A task's page: what the tasks read model says, its story as `tierlog explain` tells it
// (each routing decision with its reason and candidates, its timers, assignments and
// outcomes), and for the operator the cancel and retry buttons.
import { ApiError, get, post } from "./api.js";
import { clockTime, h, pill } from "./dom.js";

const CANCELLABLE = new Set(["queued", "assigned", "dead_lettered"]);

function fact(label, value) {
  return h("div", {}, h("span", {}, label), value ?? "—");
}

function candidates(list) {
  if (!list || !list.length) return null;
  return h("table", { class: "grid candidates" },
    h("thead", {}, h("tr", {}, ["endpoint", "score", "load", "capacity", "vram", "warm", "affinity"].map((c) => h("th", {}, c)))),
    h("tbody", {}, list.map((c) => h("tr", {},
      h("td", { class: "mono" }, c.endpoint_id),
      ["score", "load", "capacity", "vram", "warm", "affinity"].map((k) => h("td", { class: "num" }, Number(c[k]).toFixed(3)))))));
}

function detail(line) {
  const text = typeof line.detail === "string" ? line.detail
    : Object.entries(line.detail || {}).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
  const fallback = /fallback from|escalated|no candidate/.test(text);
  return h("div", { class: fallback ? "fallback" : "" }, text);
}

function storyList(story) {
  return h("ol", { class: "story" }, story.map((line) => h("li", { dataset: { event: line.event } },
    h("span", { class: "ev" }, line.event), " ",
    h("span", { class: "muted" }, `#${line.position} · ${clockTime(line.at)}`),
    line.decided_by ? h("span", { class: "muted" }, ` · ${line.decided_by}`) : null,
    detail(line),
    candidates(line.candidates))));
}

function actions(task, role, refresh, say) {
  if (role !== "admin" || !task) return null;
  const act = async (verb) => {
    try {
      await post(`/v1/tasks/${task.task_id}/${verb}`);
      say(`${verb} done`);
      refresh();
    } catch (error) {
      say(error instanceof ApiError ? error.message : String(error));
    }
  };
  return h("div", { class: "actions" },
    CANCELLABLE.has(task.state) ? h("button", { id: "cancel", class: "danger", type: "button", onclick: () => act("cancel") }, "Cancel task") : null,
    task.state === "dead_lettered" ? h("button", { id: "retry", type: "button", onclick: () => act("retry") }, "Retry") : null);
}

export async function renderTask(root, taskId, role) {
  const refresh = () => renderTask(root, taskId, role);
  let data;
  try {
    data = await get(`/v1/ui/tasks/${encodeURIComponent(taskId)}/story`);
  } catch (error) {
    root.replaceChildren(h("div", { class: "task" }, h("a", { href: "#/" }, "← Dashboard"), h("p", { class: "error" }, error.message)));
    return;
  }
  const t = data.task || {};
  const decision = t.routing_decision || {};
  const message = h("span", { class: "muted", id: "task-message" });
  root.replaceChildren(h("div", { class: "task" },
    h("a", { href: "#/" }, "← Dashboard"),
    h("section", { class: "panel" },
      h("div", { class: "panel-head" }, h("h2", {}, "Task ", h("span", { class: "mono" }, taskId)), h("span", { class: "spacer" }),
        actions(data.task, role, refresh, (text) => { message.textContent = text; }), message),
      h("p", {}, t.description || ""),
      h("div", { class: "facts" },
        fact("State", t.state ? pill(t.state) : null),
        fact("Priority", t.priority),
        fact("Tier", t.effective_tier && t.effective_tier !== t.tier ? `${t.effective_tier} (from ${t.tier})` : t.tier),
        fact("Generation", t.generation),
        fact("Assigned to", t.assigned_to),
        fact("Retries", t.retry_count !== undefined ? `${t.retry_count} of ${t.max_retries}` : null),
        fact("Target", decision.target_type ? `${decision.target_type}${decision.selected_endpoint ? ` ${decision.selected_endpoint}` : ""}` : null),
        fact("Fallback reason", h("span", { id: "fallback-reason" }, decision.fallback_used ? decision.fallback_reason : "none")),
        t.dead_letter_reason ? fact("Dead-letter reason", t.dead_letter_reason) : null,
        t.last_error ? fact("Last error", t.last_error) : null)),
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, "Timeline, with the reason of every decision")), storyList(data.story))));
}
