"""Telemetry counters: tasks by state and tier, routing decisions by tier and target,
fallback timers started/fired/cancelled by reason, histograms of fallback wait and
submit→assign latency (Prometheus-style buckets) and of each routing decision's
candidate count and scoring time; and, per task, where its timer events sit in the log
(the HTTP timeline reads them from there: they belong to the scheduler's stream).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from tierlog.domain import events as ev
from tierlog.projections.base import Handler, Rows, Table, handlers_from, iso, text_id

NAME = "telemetry"
# 2: timers started and fired are counted by reason (version 1: under label ""); the
# routing candidates and scoring-time histograms; rm_tel_task_timers.
VERSION = 2
RM_TEL_TASKS = Table(
    "rm_tel_tasks",
    (
        ("task_id", "TEXT NOT NULL"),
        ("state", "TEXT NOT NULL"),
        ("tier", "TEXT NOT NULL"),
        ("route_tier", "TEXT NOT NULL"),
        ("submitted_at", "TEXT NOT NULL"),
    ),
    key=("task_id",),
)
RM_TEL_COUNTERS = Table(
    "rm_tel_counters",
    (
        ("name", "TEXT NOT NULL"),
        ("label", "TEXT NOT NULL"),
        ("value", "DOUBLE PRECISION NOT NULL"),
    ),
    key=("name", "label"),
)
RM_TEL_TASK_TIMERS = Table(
    "rm_tel_task_timers",
    (
        ("task_id", "TEXT NOT NULL"),
        ("position", "BIGINT NOT NULL"),
        ("outcome", "TEXT NOT NULL"),
    ),
    key=("task_id", "position"),
)
# Histogram bucket upper bounds in milliseconds; "inf" catches the rest.
BUCKETS_MS: tuple[float, ...] = (1, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000, 60_000, 300_000)
# How many candidates (endpoints) one routing decision scored.
CANDIDATE_BUCKETS: tuple[float, ...] = (0, 1, 2, 3, 5, 10, 20, 50, 100)
# How long one routing decision took to score its candidates, in microseconds.
SCORING_BUCKETS_US: tuple[float, ...] = (
    10,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    50_000,
    100_000,
)


def bucket_label(value: float, bounds: tuple[float, ...] = BUCKETS_MS) -> str:
    """The (non-cumulative) bucket a value falls in: ``le_5`` … ``le_inf``."""
    for bound in bounds:
        if value <= bound:
            return f"le_{bound:g}"
    return "le_inf"


def _inc(rows: Rows, name: str, label: str = "", by: float = 1.0) -> None:
    key = (name, label)
    row = rows.get(RM_TEL_COUNTERS, key)
    if row is None:
        rows.put(RM_TEL_COUNTERS, {"name": name, "label": label, "value": float(by)})
    else:
        rows.update(RM_TEL_COUNTERS, key, {"value": row["value"] + by})


def _observe(
    rows: Rows, histogram: str, value: float, bounds: tuple[float, ...] = BUCKETS_MS
) -> None:
    _inc(rows, histogram, bucket_label(value, bounds))
    _inc(rows, histogram + "_sum", "", value)
    _inc(rows, histogram + "_count", "")


def _set_task(rows: Rows, task_id: UUID, **columns: object) -> None:
    rows.update(RM_TEL_TASKS, (text_id(task_id),), columns)


def _counted(rows: Rows, position: int, event: ev.DomainEvent) -> None:
    _inc(rows, "events")


def _submitted(rows: Rows, position: int, event: ev.TaskSubmitted) -> None:
    rows.put(
        RM_TEL_TASKS,
        {
            "task_id": text_id(event.originator_id),
            "state": "queued",
            "tier": "standard",
            "route_tier": "standard",
            "submitted_at": iso(event.timestamp),
        },
    )


def _classified(rows: Rows, position: int, event: ev.TaskClassified) -> None:
    _set_task(rows, event.originator_id, tier=event.route_tier, route_tier=event.route_tier)


def _escalated(rows: Rows, position: int, event: ev.TaskEscalated) -> None:
    _set_task(rows, event.originator_id, tier=event.to_tier)


def _deescalated(rows: Rows, position: int, event: ev.TaskDeescalated) -> None:
    _set_task(rows, event.originator_id, tier=event.to_tier)


def _routed(rows: Rows, position: int, event: ev.TaskRouted) -> None:
    d = event.decision
    _inc(rows, "routing_decisions", f"{d.effective_tier}->{d.target_type}")
    # Each decision once: an assignment reuses the decision its TaskRouted recorded.
    _observe(rows, "routing_candidates", d.candidate_count, CANDIDATE_BUCKETS)
    _observe(rows, "routing_scoring_us", d.scoring_duration_us, SCORING_BUCKETS_US)


def _assigned(rows: Rows, position: int, event: ev.TaskAssigned) -> None:
    _set_task(rows, event.originator_id, state="assigned")
    _inc(rows, "assignments", event.decision.target_type)
    if event.decision.fallback_used:
        _inc(rows, "fallback_assignments")
    row = rows.get(RM_TEL_TASKS, (text_id(event.originator_id),))
    if row is not None:
        waited = event.timestamp - datetime.fromisoformat(row["submitted_at"])
        _observe(rows, "submit_to_assign_ms", waited.total_seconds() * 1000)


def _completed(rows: Rows, position: int, event: ev.TaskCompleted) -> None:
    _set_task(rows, event.originator_id, state="completed")


def _requeued(rows: Rows, position: int, event: ev.TaskRequeued) -> None:
    _set_task(rows, event.originator_id, state="queued")
    if event.reason == "failed":
        _inc(rows, "retries")


def _retried(rows: Rows, position: int, event: ev.TaskRetried) -> None:
    # A manual retry drops the escalation: the task routes at its own tier.
    row = rows.get(RM_TEL_TASKS, (text_id(event.originator_id),))
    if row is not None:
        _set_task(rows, event.originator_id, state="queued", tier=row["route_tier"])
    _inc(rows, "manual_retries")


def _reclaimed(rows: Rows, position: int, event: ev.TaskReclaimed) -> None:
    _inc(rows, "reclaims", event.reason)


def _dead_lettered(rows: Rows, position: int, event: ev.TaskDeadLettered) -> None:
    _set_task(rows, event.originator_id, state="dead_lettered")
    _inc(rows, "dead_letters", event.reason)


def _cancelled(rows: Rows, position: int, event: ev.TaskCancelled) -> None:
    _set_task(rows, event.originator_id, state="cancelled")


def _timer_event(rows: Rows, task_id: UUID, position: int, outcome: str) -> None:
    rows.put(
        RM_TEL_TASK_TIMERS,
        {"task_id": text_id(task_id), "position": position, "outcome": outcome},
    )


def _timer_started(rows: Rows, position: int, event: ev.FallbackTimerStarted) -> None:
    _inc(rows, "timers_started", event.reason)
    _timer_event(rows, event.task_id, position, "started")


def _timer_fired(rows: Rows, position: int, event: ev.FallbackTimerFired) -> None:
    _inc(rows, "timers_fired", event.reason)
    _observe(rows, "fallback_wait_ms", event.wait_ms)
    _timer_event(rows, event.task_id, position, "fired")


def _timer_cancelled(rows: Rows, position: int, event: ev.FallbackTimerCancelled) -> None:
    _inc(rows, "timers_cancelled", event.reason)
    _timer_event(rows, event.task_id, position, "cancelled")


_HANDLERS: dict[type, Handler] = {
    ev.TaskSubmitted: _submitted,
    ev.TaskClassified: _classified,
    ev.TaskEscalated: _escalated,
    ev.TaskDeescalated: _deescalated,
    ev.TaskRouted: _routed,
    ev.TaskAssigned: _assigned,
    ev.TaskCompleted: _completed,
    ev.TaskRequeued: _requeued,
    ev.TaskRetried: _retried,
    ev.TaskReclaimed: _reclaimed,
    ev.TaskDeadLettered: _dead_lettered,
    ev.TaskCancelled: _cancelled,
    ev.FallbackTimerStarted: _timer_started,
    ev.FallbackTimerFired: _timer_fired,
    ev.FallbackTimerCancelled: _timer_cancelled,
}


class TelemetryProjection:
    """Folds events into counters and histograms."""

    name = NAME
    version = VERSION
    tables: Sequence[Table] = (RM_TEL_TASKS, RM_TEL_COUNTERS, RM_TEL_TASK_TIMERS)

    def handlers_for(self, event_type: type) -> Sequence[Handler]:
        """Every event is counted; some types are folded further."""
        return (_counted, *handlers_from(_HANDLERS, event_type))


def _histogram(
    counters: dict[tuple[str, str], float],
    name: str,
    bounds: tuple[float, ...] = BUCKETS_MS,
    sum_key: str = "sum_ms",
) -> dict[str, Any]:
    labels = [f"le_{b:g}" for b in bounds] + ["le_inf"]
    return {
        "buckets": {label: int(counters.get((name, label), 0)) for label in labels},
        "count": int(counters.get((name + "_count", ""), 0)),
        sum_key: counters.get((name + "_sum", ""), 0.0),
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
            "started": sum(labelled("timers_started").values()),
            "fired": sum(labelled("timers_fired").values()),
            "cancelled": labelled("timers_cancelled"),
            "started_by_reason": labelled("timers_started"),
            "fired_by_reason": labelled("timers_fired"),
        },
        "retries": int(counters.get(("retries", ""), 0)),
        "manual_retries": int(counters.get(("manual_retries", ""), 0)),
        "reclaims": labelled("reclaims"),
        "dead_letters": labelled("dead_letters"),
        "fallback_wait_ms": _histogram(counters, "fallback_wait_ms"),
        "submit_to_assign_ms": _histogram(counters, "submit_to_assign_ms"),
        "routing_candidates": _histogram(
            counters, "routing_candidates", CANDIDATE_BUCKETS, sum_key="sum"
        ),
        "routing_scoring_us": _histogram(
            counters, "routing_scoring_us", SCORING_BUCKETS_US, sum_key="sum_us"
        ),
    }


TIMER_POSITIONS_QUERY = (
    "SELECT position FROM rm_tel_task_timers WHERE task_id = ? ORDER BY position"
)
"""Where the timer events of one task (``?``: its id as text) sit in the log."""

TELEMETRY_QUERIES = (
    "SELECT name, label, value FROM rm_tel_counters",
    "SELECT state, tier, COUNT(*) FROM rm_tel_tasks GROUP BY state, tier",
)
