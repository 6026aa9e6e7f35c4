"""How the operator commands show what the server answered: rich tables on a terminal
(plain columns through a pipe), one readable line per log event, and the ``status``
summary built from the server's reads."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

SHORT_ID = 8
"""Characters of a task id shown in tables: its last ones (new ids start with the time
they were made, so tasks of the same minute share their first characters). The
operator commands accept any unique start or end of an id."""


def short_id(task_id: object) -> str:
    """The end of a task id that tables show (its random part)."""
    return str(task_id or "")[-SHORT_ID:]


DESCRIPTION_CHARS = 48
# Payload fields worth a place on an event's line, in this order.
EVENT_FIELDS = (
    "agent_id",
    "task_id",
    "generation",
    "endpoint_id",
    "tier",
    "effective_tier",
    "target_type",
    "selected_endpoint",
    "selected_model",
    "status",
    "reason",
    "error",
    "state",
    "fires_at",
    "description",
)


def console() -> Console:
    """Standard output (colours and borders only on a terminal)."""
    return Console(soft_wrap=False, highlight=False)


def short(value: Any, width: int = DESCRIPTION_CHARS) -> str:
    """A value as text, cut to ``width`` characters."""
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    """A rich table of ``rows`` (values shown as text)."""
    shown = Table(title=title, title_justify="left")
    for column in columns:
        shown.add_column(column, overflow="fold")
    for row in rows:
        shown.add_row(*(cell_text(v) for v in row))
    return shown


def cell_text(value: Any) -> str:
    """A value as a table shows it: JSON for objects and lists (never a Python repr),
    nothing for None."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def tasks_table(rows: list[dict[str, Any]], title: str = "tasks") -> Table:
    """Tasks: id, state, tier, priority, holder, generation, description."""
    return table(
        f"{title} ({len(rows)})",
        ["id", "state", "tier", "priority", "agent", "gen", "description"],
        [
            [
                short_id(r["task_id"]),
                r.get("state"),
                r.get("effective_tier") or r.get("tier"),
                r.get("priority"),
                r.get("assigned_to"),
                r.get("generation"),
                short(r.get("description")),
            ]
            for r in rows
        ],
    )


def queue_table(page: dict[str, Any]) -> Table:
    """The queue in order, with why each task waits."""
    return table(
        f"queue ({page.get('total', len(page['tasks']))} queued)",
        ["#", "id", "tier", "priority", "waiting", "description"],
        [
            [
                r.get("queued"),
                short_id(r["task_id"]),
                r.get("effective_tier"),
                r.get("priority"),
                r.get("waiting_reason"),
                short(r.get("description"), 32),
            ]
            for r in page["tasks"]
        ],
    )


def agents_table(rows: list[dict[str, Any]]) -> Table:
    """Agents: id, status, task held, capabilities."""
    return table(
        f"agents ({len(rows)})",
        ["agent", "status", "task", "gen", "capabilities", "ollama host"],
        [
            [
                r["agent_id"],
                r.get("status"),
                short_id(r.get("task_id")),
                r.get("generation"),
                ", ".join(r.get("capabilities") or []),
                r.get("ollama_host"),
            ]
            for r in rows
        ],
    )


def endpoints_table(rows: list[dict[str, Any]]) -> Table:
    """Endpoints: id, status, models, CPU and RAM when reported."""
    return table(
        f"endpoints ({len(rows)})",
        ["endpoint", "status", "models", "cpu %", "ram total"],
        [
            [
                r["endpoint_id"],
                r.get("status"),
                ", ".join(r.get("models") or []),
                (r.get("resources") or {}).get("cpu_percent"),
                (r.get("resources") or {}).get("ram_total_bytes"),
            ]
            for r in rows
        ],
    )


def task_detail(task: dict[str, Any], timeline: list[dict[str, Any]]) -> list[Table]:
    """One task: its fields, then its timeline."""
    decision = task.get("routing_decision") or {}
    fields = [
        ["id", task["task_id"]],
        ["state", task.get("state")],
        ["description", task.get("description")],
        ["priority", task.get("priority")],
        ["tier", f"{task.get('effective_tier')} (classified {task.get('tier')})"],
        ["routing", decision.get("classification_reason")],
        ["target", _target(decision)],
        ["agent", task.get("assigned_to")],
        ["generation", task.get("generation")],
        ["retries", f"{task.get('retry_count')} of {task.get('max_retries')}"],
        ["last error", task.get("last_error")],
        ["result", task.get("result")],
        ["dead letter", task.get("dead_letter_reason")],
    ]
    shown = [[k, v] for k, v in fields if v not in (None, "")]
    events = [
        [e.get("version"), e.get("timestamp"), e.get("type"), event_summary(e.get("payload", {}))]
        for e in timeline
    ]
    return [
        table("task", ["field", "value"], shown),
        table("timeline", ["v", "at", "event", "detail"], events),
    ]


def _target(decision: dict[str, Any]) -> str | None:
    if not decision:
        return None
    where = "/".join(
        str(x) for x in (decision.get("selected_endpoint"), decision.get("selected_model")) if x
    )
    fallback = " (fallback)" if decision.get("fallback_used") else ""
    return f"{decision.get('target_type')} {where}".strip() + fallback


def event_summary(payload: dict[str, Any]) -> str:
    """The fields of an event's payload worth reading, as ``key=value``."""
    parts = []
    for key in EVENT_FIELDS:
        value = payload.get(key)
        if value not in (None, "", [], {}):
            parts.append(f"{key}={short(value, 40)}")
    decision = payload.get("decision")
    if isinstance(decision, dict):
        parts.append(f"tier={decision.get('effective_tier')} target={_target(decision)}")
    return " ".join(parts)


def event_line(event: dict[str, Any]) -> str:
    """One log event on one line: position, time, type, aggregate, what it says."""
    aggregate = short_id(event.get("aggregate_id", ""))
    return (
        f"{event['position']:>8}  {event.get('timestamp', '')[:23]}  "
        f"{event.get('type', ''):<24} {aggregate:<8}  {event_summary(event.get('payload', {}))}"
    ).rstrip()


def status_summary(
    health: dict[str, Any],
    telemetry: dict[str, Any],
    agents: list[dict[str, Any]],
    endpoints: list[dict[str, Any]],
) -> dict[str, Any]:
    """One screen's worth: log head, lag, queue by tier, agents by state, endpoints,
    timers pending."""
    counters = telemetry.get("telemetry", {})
    timers = counters.get("timers", {})
    settled = int(timers.get("fired", 0)) + sum(timers.get("cancelled", {}).values())
    projections = health.get("projections", {})
    return {
        "status": health.get("status"),
        "reason": health.get("reason"),
        "log_head": health.get("log_head"),
        "lag": {name: p.get("lag", 0) for name, p in projections.items()},
        "queue_by_tier": counters.get("tasks_by_state_and_tier", {}).get("queued", {}),
        "tasks_by_state": {
            state: sum(tiers.values())
            for state, tiers in counters.get("tasks_by_state_and_tier", {}).items()
        },
        "agents_by_state": dict(Counter(str(a.get("status")) for a in agents)),
        "endpoints": {e["endpoint_id"]: e.get("status") for e in endpoints},
        "timers_pending": max(0, int(timers.get("started", 0)) - settled),
    }


def status_table(summary: dict[str, Any]) -> Table:
    """The ``status`` summary as one table."""

    def pairs(data: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in data.items()) or "none"

    reason = f" ({summary['reason']})" if summary.get("reason") else ""
    return table(
        "tierlog status",
        ["", ""],
        [
            ["server", f"{summary['status']}{reason}"],
            ["log head", summary["log_head"]],
            ["read model lag", pairs(summary["lag"])],
            ["queued by tier", pairs(summary["queue_by_tier"])],
            ["tasks by state", pairs(summary["tasks_by_state"])],
            ["agents by state", pairs(summary["agents_by_state"])],
            ["endpoints", pairs(summary["endpoints"])],
            ["timers pending", summary["timers_pending"]],
        ],
    )
