"""Readable tables for ``at``, ``diff`` and ``explain`` (their ``--json`` prints the dicts
these are built from, unchanged)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table


def _table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for n, column in enumerate(columns, start=1):
        # The last column (a reason, a value) wraps; ids and times stay on one line.
        table.add_column(column, overflow="fold", no_wrap=n < len(columns))
    for row in rows:
        table.add_row(*(_cell(cell) for cell in row))
    return table


def _cell(value: Any) -> str:
    """A cell's text: nothing for None, JSON for a structure, else the value itself."""
    if value is None:
        return ""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str)
    return str(value)


def _group(summary: Table, *details: Table) -> Group:
    """The summary, then each detail table that has rows."""
    return Group(summary, *(table for table in details if table.row_count))


def _counts(counts: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in counts.items()) or "none"


def state_at(data: dict[str, Any]) -> RenderableType:
    """The state at a position (``summarise_state``): counters, queue, timers, agents,
    endpoints."""
    counters = data["counters"]
    return _group(
        _table(
            f"state at position {data['position']}",
            ("what", "count"),
            [
                ("tasks by state", _counts(counters["tasks_by_state"])),
                ("tasks by tier", _counts(counters["tasks_by_tier"])),
                ("queued", len(data["queue"])),
                ("timers pending", len(data["timers"])),
                ("agents", len(data["agents"])),
                ("endpoints", len(data["endpoints"])),
            ],
        ),
        _table(
            "queue",
            ("task_id", "priority", "tier", "generation"),
            [(t["task_id"], t["priority"], t["tier"], t["generation"]) for t in data["queue"]],
        ),
        _table(
            "timers pending",
            ("task_id", "original_tier", "fallback_tier", "fires_at", "reason"),
            [
                (t["task_id"], t["original_tier"], t["fallback_tier"], t["fires_at"], t["reason"])
                for t in data["timers"]
            ],
        ),
        _table(
            "agents",
            ("agent_id", "status", "task_id", "capabilities"),
            [
                (a["agent_id"], a["status"], a["task_id"], ", ".join(sorted(a["capabilities"])))
                for a in data["agents"]
            ],
        ),
        _table(
            "endpoints",
            ("endpoint_id", "status", "models"),
            [(e["endpoint_id"], e["status"], ", ".join(e["models"])) for e in data["endpoints"]],
        ),
    )


def task_at(data: dict[str, Any]) -> RenderableType:
    """One task at a position (``at --task``): its fields, one per row."""
    task = data["task"]
    title = f"task at position {data['position']}"
    if task is None:
        return _table(title, ("task",), [("not in the log at this position",)])
    return _table(title, ("field", "value"), [(k, v) for k, v in task.items()])


def changes(data: dict[str, Any]) -> RenderableType:
    """What changed between two positions (``diff``)."""
    return _group(
        _table(
            f"from position {data['from']} to {data['to']}",
            ("what", "change"),
            [
                ("tasks changed state", len(data["tasks_changed"])),
                ("timers", _counts(data["timers"])),
                ("endpoint changes", len(data["endpoint_changes"])),
                ("counter deltas", _counts(data["counter_deltas"])),
            ],
        ),
        _table(
            "tasks changed",
            ("task_id", "from", "to"),
            [(t["task_id"], t["from"], t["to"]) for t in data["tasks_changed"]],
        ),
        _table(
            "endpoint changes",
            ("endpoint_id", "change", "status"),
            [(e["endpoint_id"], e["change"], e["status"]) for e in data["endpoint_changes"]],
        ),
    )


def _detail(detail: Any) -> str:
    """An event's detail: its text, or its fields as ``key=value`` (values as JSON)."""
    if isinstance(detail, dict):
        return ", ".join(f"{key}={json.dumps(value, default=str)}" for key, value in detail.items())
    return str(detail)


def story(lines: list[dict[str, Any]]) -> RenderableType:
    """A task's timeline (``explain``): each event with its reason."""
    decided = any("decided_by" in line for line in lines)
    columns = ("position", "at", "event", "detail", *(("decided_by",) if decided else ()))
    return _table(
        "timeline",
        columns,
        [
            (
                line["position"],
                line["at"],
                line["event"],
                _detail(line.get("detail", "")),
                *((line.get("decided_by"),) if decided else ()),
            )
            for line in lines
        ],
    )


def show(renderable: RenderableType) -> None:
    """Print on stdout (plain text when it is not a terminal)."""
    Console(soft_wrap=False).print(renderable)
