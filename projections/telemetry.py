"""Telemetry counters: tasks by state and tier, routing decisions by tier and target,
fallback timers started/fired/cancelled by reason, and histograms of fallback wait
and submit→assign latency (Prometheus-style buckets).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from domain import events as ev
from projections.base import ReadModelWriter, iso

NAME = "telemetry"
TABLES = ("rm_tel_tasks", "rm_tel_counters")
DDL = (
    "CREATE TABLE IF NOT EXISTS rm_tel_tasks ("
    " task_id TEXT PRIMARY KEY, state TEXT NOT NULL, tier TEXT NOT NULL,"
    " route_tier TEXT NOT NULL, submitted_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rm_tel_counters ("
    " name TEXT NOT NULL, label TEXT NOT NULL, value DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (name, label))",
)
# Histogram bucket upper bounds in milliseconds; "inf" catches the rest.
BUCKETS_MS: tuple[float, ...] = (1, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000, 60_000, 300_000)


def bucket_label(value_ms: float) -> str:
    """The (non-cumulative) bucket a value falls in: ``le_5`` … ``le_inf``."""
    for bound in BUCKETS_MS:
        if value_ms <= bound:
            return f"le_{bound:g}"
    return "le_inf"


def _inc(db: ReadModelWriter, name: str, label: str = "", by: float = 1.0) -> None:
    db.execute(
        "INSERT INTO rm_tel_counters (name, label, value) VALUES (?, ?, ?)"
        " ON CONFLICT (name, label) DO UPDATE SET value = rm_tel_counters.value + excluded.value",
        (name, label, by),
    )


def _observe(db: ReadModelWriter, histogram: str, value_ms: float) -> None:
    _inc(db, histogram, bucket_label(value_ms))
    _inc(db, histogram + "_sum", "", value_ms)
    _inc(db, histogram + "_count", "")


def _set_task(db: ReadModelWriter, task_id: object, **columns: object) -> None:
    sets = ", ".join(f"{name} = ?" for name in columns)
    db.execute(
        f"UPDATE rm_tel_tasks SET {sets} WHERE task_id = ?", (*columns.values(), str(task_id))
    )


class TelemetryProjection:
    """Folds events into counters and histograms."""

    name = NAME
    tables: Sequence[str] = TABLES
    ddl: Sequence[str] = DDL

    def apply(self, db: ReadModelWriter, position: int, event: ev.DomainEvent) -> None:
        """Fold one event."""
        _inc(db, "events")
        task_id = event.originator_id
        match event:
            case ev.TaskSubmitted():
                db.execute(
                    "INSERT INTO rm_tel_tasks (task_id, state, tier, route_tier, submitted_at)"
                    " VALUES (?, 'queued', 'standard', 'standard', ?)",
                    (str(task_id), iso(event.timestamp)),
                )
            case ev.TaskClassified():
                _set_task(db, task_id, tier=event.route_tier, route_tier=event.route_tier)
            case ev.TaskEscalated():
                _set_task(db, task_id, tier=event.to_tier)
            case ev.TaskRouted():
                d = event.decision
                _inc(db, "routing_decisions", f"{d.effective_tier}->{d.target_type}")
            case ev.TaskAssigned():
                _set_task(db, task_id, state="assigned")
                _inc(db, "assignments", event.decision.target_type)
                if event.decision.fallback_used:
                    _inc(db, "fallback_assignments")
                row = db.fetchone(
                    "SELECT submitted_at FROM rm_tel_tasks WHERE task_id = ?", (str(task_id),)
                )
                if row is not None:
                    waited = event.timestamp - datetime.fromisoformat(row[0])
                    _observe(db, "submit_to_assign_ms", waited.total_seconds() * 1000)
            case ev.TaskCompleted():
                _set_task(db, task_id, state="completed")
            case ev.TaskRequeued():
                _set_task(db, task_id, state="queued")
                if event.reason == "failed":
                    _inc(db, "retries")
            case ev.TaskRetried():
                # A manual retry drops the escalation: the task routes at its own tier.
                db.execute(
                    "UPDATE rm_tel_tasks SET state = 'queued', tier = route_tier WHERE task_id = ?",
                    (str(task_id),),
                )
                _inc(db, "manual_retries")
            case ev.TaskReclaimed():
                _inc(db, "reclaims", event.reason)
            case ev.TaskDeadLettered():
                _set_task(db, task_id, state="dead_lettered")
                _inc(db, "dead_letters", event.reason)
            case ev.TaskCancelled():
                _set_task(db, task_id, state="cancelled")
            case ev.FallbackTimerStarted():
                _inc(db, "timers_started")
            case ev.FallbackTimerFired():
                _inc(db, "timers_fired")
                _observe(db, "fallback_wait_ms", event.wait_ms)
            case ev.FallbackTimerCancelled():
                _inc(db, "timers_cancelled", event.reason)
            case _:
                pass


def _histogram(counters: dict[tuple[str, str], float], name: str) -> dict[str, Any]:
    labels = [f"le_{b:g}" for b in BUCKETS_MS] + ["le_inf"]
    return {
        "buckets": {label: int(counters.get((name, label), 0)) for label in labels},
        "count": int(counters.get((name + "_count", ""), 0)),
        "sum_ms": counters.get((name + "_sum", ""), 0.0),
    }


def summarise(
    counter_rows: Iterable[tuple[str, str, float]], state_tier_rows: Iterable[tuple[str, str, int]]
) -> dict[str, Any]:
    """Shape ``rm_tel_counters`` rows and ``(state, tier, count)`` rows for people and JSON."""
    counters = {(name, label): value for name, label, value in counter_rows}

    def labelled(name: str) -> dict[str, int]:
        return {label: int(v) for (n, label), v in sorted(counters.items()) if n == name}

    by_state: dict[str, dict[str, int]] = {}
    for state, tier, count in sorted(state_tier_rows):
        by_state.setdefault(state, {})[tier] = int(count)
    return {
        "events": int(counters.get(("events", ""), 0)),
        "tasks": sum(sum(t.values()) for t in by_state.values()),
        "tasks_by_state_and_tier": by_state,
        "routing_decisions": labelled("routing_decisions"),
        "assignments_by_target": labelled("assignments"),
        "fallback_assignments": int(counters.get(("fallback_assignments", ""), 0)),
        "timers": {
            "started": int(counters.get(("timers_started", ""), 0)),
            "fired": int(counters.get(("timers_fired", ""), 0)),
            "cancelled": labelled("timers_cancelled"),
        },
        "retries": int(counters.get(("retries", ""), 0)),
        "manual_retries": int(counters.get(("manual_retries", ""), 0)),
        "reclaims": labelled("reclaims"),
        "dead_letters": labelled("dead_letters"),
        "fallback_wait_ms": _histogram(counters, "fallback_wait_ms"),
        "submit_to_assign_ms": _histogram(counters, "submit_to_assign_ms"),
    }


TELEMETRY_QUERIES = (
    "SELECT name, label, value FROM rm_tel_counters",
    "SELECT state, tier, COUNT(*) FROM rm_tel_tasks GROUP BY state, tier",
)
