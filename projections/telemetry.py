"""Telemetry counters: tasks by state and tier, routing decisions by tier and target,
fallback timers started/fired/cancelled by reason, histograms of fallback wait and
submit→assign latency (Prometheus-style buckets) and of each routing decision's
candidate count and scoring time; and, per task, where its timer events sit in the log
(the HTTP timeline reads them from there: they belong to the scheduler's stream).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from tierlog.domain import events as ev
from tierlog.projections.base import (
    ID,
    OUTCOME,
    OUTCOMES,
    STATE,
    STATES,
    TIER,
    TIERS,
    TIME,
    Handler,
    Row,
    Rows,
    Table,
    handlers_from,
    id_bytes,
    micros,
)

NAME = "telemetry"
# 2: timers started and fired are counted by reason (version 1: under label ""); the
# routing candidates and scoring-time histograms; rm_tel_task_timers.
# 3: typed columns (issue #16); counters are integers added to in SQL, the
# submit-to-assign sum kept in microseconds, so no sum depends on how events are batched.
VERSION = 3
RM_TEL_TASKS = Table(
    "rm_tel_tasks",
    (
        ("task_id", "BYTEA NOT NULL", ID),
        ("state", "INTEGER NOT NULL", STATE),
        ("tier", "INTEGER NOT NULL", TIER),
        ("route_tier", "INTEGER NOT NULL", TIER),
        ("submitted_at", "BIGINT NOT NULL", TIME),
    ),
    key=("task_id",),
)
RM_TEL_COUNTERS = Table(
    "rm_tel_counters",
    (
        ("name", "TEXT NOT NULL"),
        ("label", "TEXT NOT NULL"),
        ("value", "BIGINT NOT NULL"),
    ),
    key=("name", "label"),
)
RM_TEL_TASK_TIMERS = Table(
    "rm_tel_task_timers",
    (
        ("task_id", "BYTEA NOT NULL", ID),
        ("position", "BIGINT NOT NULL"),
        ("outcome", "INTEGER NOT NULL", OUTCOME),
    ),
    key=("task_id", "position"),
)
_STATE, _TIER, _ROUTE_TIER, _SUBMITTED_AT = (
    RM_TEL_TASKS.index(c) for c in ("state", "tier", "route_tier", "submitted_at")
)
_QUEUED, _ASSIGNED, _COMPLETED, _DEAD_LETTERED, _CANCELLED = (
    STATES.code[s] for s in ("queued", "assigned", "completed", "dead_lettered", "cancelled")
)
_STANDARD = TIERS.code["standard"]
# Each histogram's sum is an integer in its smallest unit; the answer scales it.
_SUM_SCALE = {"submit_to_assign_ms": 1000}
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


def _inc(rows: Rows, name: str, label: str = "", by: int = 1) -> None:
    rows.add(RM_TEL_COUNTERS, (name, label), by)


def _observe(
    rows: Rows, histogram: str, value: float, bounds: tuple[float, ...], total: int
) -> None:
    """Count ``value`` in its bucket of ``histogram`` and add ``total`` (the value as an
    integer in the histogram's sum unit) to its sum."""
    add, key = rows.add, (histogram, bucket_label(value, bounds))
    add(RM_TEL_COUNTERS, key, 1)
    add(RM_TEL_COUNTERS, (histogram + "_sum", ""), total)
    add(RM_TEL_COUNTERS, (histogram + "_count", ""), 1)


def _task(rows: Rows, task_id: UUID) -> Row | None:
    return rows.change(RM_TEL_TASKS, (id_bytes(task_id),))


def _counted(rows: Rows, position: int, event: ev.DomainEvent) -> None:
    rows.add(RM_TEL_COUNTERS, ("events", ""), 1)


def _submitted(rows: Rows, position: int, event: ev.TaskSubmitted) -> None:
    values: list[Any] = [
        id_bytes(event.originator_id),
        _QUEUED,
        _STANDARD,
        _STANDARD,
        micros(event.timestamp),
    ]
    rows.put(RM_TEL_TASKS, values)


def _classified(rows: Rows, position: int, event: ev.TaskClassified) -> None:
    row = _task(rows, event.originator_id)
    if row is not None:
        row[_TIER] = row[_ROUTE_TIER] = TIERS.code[event.route_tier]


def _escalated(rows: Rows, position: int, event: ev.TaskEscalated | ev.TaskDeescalated) -> None:
    row = _task(rows, event.originator_id)
    if row is not None:
        row[_TIER] = TIERS.code[event.to_tier]


def _routed(rows: Rows, position: int, event: ev.TaskRouted) -> None:
    d = event.decision
    _inc(rows, "routing_decisions", f"{d.effective_tier}->{d.target_type}")
    # Each decision once: an assignment reuses the decision its TaskRouted recorded.
    count, took = d.candidate_count, d.scoring_duration_us
    _observe(rows, "routing_candidates", count, CANDIDATE_BUCKETS, count)
    _observe(rows, "routing_scoring_us", took, SCORING_BUCKETS_US, took)


def _assigned(rows: Rows, position: int, event: ev.TaskAssigned) -> None:
    _inc(rows, "assignments", event.decision.target_type)
    if event.decision.fallback_used:
        _inc(rows, "fallback_assignments")
    row = _task(rows, event.originator_id)
    if row is not None:
        row[_STATE] = _ASSIGNED
        waited_us = micros(event.timestamp) - row[_SUBMITTED_AT]
        _observe(rows, "submit_to_assign_ms", waited_us / 1000, BUCKETS_MS, waited_us)


def _set_state(rows: Rows, task_id: UUID, state: int) -> None:
    row = _task(rows, task_id)
    if row is not None:
        row[_STATE] = state


def _completed(rows: Rows, position: int, event: ev.TaskCompleted) -> None:
    _set_state(rows, event.originator_id, _COMPLETED)


def _requeued(rows: Rows, position: int, event: ev.TaskRequeued) -> None:
    _set_state(rows, event.originator_id, _QUEUED)
    if event.reason == "failed":
        _inc(rows, "retries")


def _retried(rows: Rows, position: int, event: ev.TaskRetried) -> None:
    # A manual retry drops the escalation: the task routes at its own tier.
    row = _task(rows, event.originator_id)
    if row is not None:
        row[_STATE] = _QUEUED
        row[_TIER] = row[_ROUTE_TIER]
    _inc(rows, "manual_retries")


def _reclaimed(rows: Rows, position: int, event: ev.TaskReclaimed) -> None:
    _inc(rows, "reclaims", event.reason)


def _dead_lettered(rows: Rows, position: int, event: ev.TaskDeadLettered) -> None:
    _set_state(rows, event.originator_id, _DEAD_LETTERED)
    _inc(rows, "dead_letters", event.reason)


def _cancelled(rows: Rows, position: int, event: ev.TaskCancelled) -> None:
    _set_state(rows, event.originator_id, _CANCELLED)


_STARTED, _FIRED, _CANCELLED_TIMER = (OUTCOMES.code[o] for o in OUTCOMES.names)


def _timer_event(rows: Rows, task_id: UUID, position: int, outcome: int) -> None:
    rows.put(RM_TEL_TASK_TIMERS, [id_bytes(task_id), position, outcome])


def _timer_started(rows: Rows, position: int, event: ev.FallbackTimerStarted) -> None:
    _inc(rows, "timers_started", event.reason)
    _timer_event(rows, event.task_id, position, _STARTED)


def _timer_fired(rows: Rows, position: int, event: ev.FallbackTimerFired) -> None:
    _inc(rows, "timers_fired", event.reason)
    _observe(rows, "fallback_wait_ms", event.wait_ms, BUCKETS_MS, event.wait_ms)
    _timer_event(rows, event.task_id, position, _FIRED)


def _timer_cancelled(rows: Rows, position: int, event: ev.FallbackTimerCancelled) -> None:
    _inc(rows, "timers_cancelled", event.reason)
    _timer_event(rows, event.task_id, position, _CANCELLED_TIMER)


_HANDLERS: dict[type, Handler] = {
    ev.TaskSubmitted: _submitted,
    ev.TaskClassified: _classified,
    ev.TaskEscalated: _escalated,
    ev.TaskDeescalated: _escalated,
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
        # Always a float (true division), as the answers showed it when sums were floats.
        sum_key: counters.get((name + "_sum", ""), 0) / _SUM_SCALE.get(name, 1),
    }


def summarise(
    counter_rows: Iterable[tuple[str, str, float]], state_tier_rows: Iterable[tuple[int, int, int]]
) -> dict[str, Any]:
    """Shape ``rm_tel_counters`` rows and ``(state, tier, count)`` rows (codes, as
    ``TELEMETRY_QUERIES`` reads them) for people and JSON."""
    counters = {(name, label): value for name, label, value in counter_rows}
    named = ((STATES.names[s], TIERS.names[t], n) for s, t, n in state_tier_rows)

    def labelled(name: str) -> dict[str, int]:
        return {label: int(v) for (n, label), v in sorted(counters.items()) if n == name}

    by_state: dict[str, dict[str, int]] = {}
    for state, tier, count in sorted(named):
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
"""Where the timer events of one task (``?``: its id's bytes) sit in the log."""

TELEMETRY_QUERIES = (
    "SELECT name, label, value FROM rm_tel_counters",
    "SELECT state, tier, COUNT(*) FROM rm_tel_tasks GROUP BY state, tier",
)
