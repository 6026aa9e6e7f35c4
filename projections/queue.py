"""The queue read model: queued tasks in queue order, their tier and pending timer.

It holds the tasks that may still be queued, not the history (``rm_tasks`` keeps
that): a row goes when its task is completed or cancelled, states no task leaves. A
task that leaves the queue for an agent or the dead letters keeps its row
(``queued = 0``): a reclaim, a failure or an operator's retry puts it back, and the row
holds what only its submission said (description, capabilities, deadline). The queue
is ``WHERE queued = 1 ORDER BY priority_rank, submit_position``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from tierlog.domain import events as ev
from tierlog.domain.aggregates.task import PRIORITY_RANK
from tierlog.projections.base import Handler, Row, Rows, Table, handlers_from, iso, text_id, to_json

NAME = "queue"
# 2: completed and cancelled tasks' rows are deleted (version 1 kept every task's row).
VERSION = 2
RM_QUEUE = Table(
    "rm_queue",
    (
        ("task_id", "TEXT NOT NULL"),
        ("queued", "INTEGER NOT NULL"),
        ("priority", "TEXT NOT NULL"),
        ("priority_rank", "INTEGER NOT NULL"),
        ("submit_position", "BIGINT NOT NULL"),
        ("tier", "TEXT NOT NULL"),
        ("effective_tier", "TEXT NOT NULL"),
        ("escalation_reason", "TEXT"),
        ("generation", "INTEGER NOT NULL"),
        ("queued_at", "TEXT NOT NULL"),
        ("complete_by", "TEXT"),
        ("needed_capabilities", "TEXT NOT NULL"),
        ("description", "TEXT NOT NULL"),
        ("timer_fires_at", "TEXT"),
        ("timer_fallback_tier", "TEXT"),
        ("timer_reason", "TEXT"),
        ("position", "BIGINT NOT NULL"),
    ),
    key=("task_id",),
    indexes=(
        "CREATE INDEX IF NOT EXISTS rm_queue_order ON rm_queue (queued, priority_rank,"
        " submit_position)",
    ),
)
_NO_TIMER: Row = {"timer_fires_at": None, "timer_fallback_tier": None, "timer_reason": None}


def waiting_reason(row: dict[str, object], now_iso: str) -> str:
    """Why a queued task waits, in words, from its queue row."""
    deadline = row.get("complete_by")
    if deadline and datetime.fromisoformat(str(deadline)) <= datetime.fromisoformat(now_iso):
        return "overdue: its complete_by has passed, so no agent is given it"
    if row.get("timer_fires_at"):
        return (
            f"no candidate at tier {row['tier']} ({row['timer_reason']}); falls back to "
            f"{row['timer_fallback_tier']} at {row['timer_fires_at']}"
        )
    if row.get("escalation_reason"):
        return (
            f"escalated to {row['effective_tier']} ({row['escalation_reason']}); "
            "waiting for an agent or a candidate"
        )
    return f"waiting for an idle agent (or a candidate) at tier {row['effective_tier']}"


def reason_changes_at(row: dict[str, object], now: datetime) -> float:
    """When (a POSIX time) the clock alone changes ``waiting_reason`` of a queue row:
    its ``complete_by`` still ahead of ``now``, else never (``inf``). Anything else
    that changes the reason is an event, so a new log position."""
    deadline = row.get("complete_by")
    if deadline:
        when = datetime.fromisoformat(str(deadline))
        if when > now:
            return when.timestamp()
    return math.inf


def _set(rows: Rows, task_id: UUID, position: int, changes: Row) -> None:
    changes["position"] = position
    rows.update(RM_QUEUE, (text_id(task_id),), changes)


def _submitted(rows: Rows, position: int, event: ev.TaskSubmitted) -> None:
    rows.put(
        RM_QUEUE,
        {
            "task_id": text_id(event.originator_id),
            "queued": 1,
            "priority": event.priority,
            "priority_rank": PRIORITY_RANK[event.priority],
            "submit_position": position,
            "tier": "standard",
            "effective_tier": "standard",
            "escalation_reason": None,
            "generation": 0,
            "queued_at": iso(event.timestamp),
            "complete_by": iso(event.complete_by),
            "needed_capabilities": to_json(event.needed_capabilities),
            "description": event.description,
            **_NO_TIMER,
            "position": position,
        },
    )


def _classified(rows: Rows, position: int, event: ev.TaskClassified) -> None:
    _set(
        rows,
        event.originator_id,
        position,
        {"tier": event.route_tier, "effective_tier": event.route_tier},
    )


def _escalated(rows: Rows, position: int, event: ev.TaskEscalated) -> None:
    _set(
        rows,
        event.originator_id,
        position,
        {"effective_tier": event.to_tier, "escalation_reason": event.reason},
    )


def _deescalated(rows: Rows, position: int, event: ev.TaskDeescalated) -> None:
    _set(
        rows,
        event.originator_id,
        position,
        {"effective_tier": event.to_tier, "escalation_reason": None},
    )


def _left_queue(rows: Rows, position: int, event: ev.DomainEvent) -> None:
    _set(rows, event.originator_id, position, {"queued": 0})


def _finished(rows: Rows, position: int, event: ev.TaskCompleted | ev.TaskCancelled) -> None:
    rows.delete(RM_QUEUE, (text_id(event.originator_id),))


def _requeued(rows: Rows, position: int, event: ev.TaskRequeued) -> None:
    _set(
        rows,
        event.originator_id,
        position,
        {"queued": 1, "generation": event.generation, "queued_at": iso(event.timestamp)},
    )


def _retried(rows: Rows, position: int, event: ev.TaskRetried) -> None:
    row = rows.get(RM_QUEUE, (text_id(event.originator_id),))
    if row is None:
        return
    _set(
        rows,
        event.originator_id,
        position,
        {
            "queued": 1,
            "generation": event.generation,
            "queued_at": iso(event.timestamp),
            "effective_tier": row["tier"],
            "escalation_reason": None,
            "complete_by": iso(event.complete_by),
        },
    )


def _timer_started(rows: Rows, position: int, event: ev.FallbackTimerStarted) -> None:
    _set(
        rows,
        event.task_id,
        position,
        {
            "timer_fires_at": iso(event.fires_at),
            "timer_fallback_tier": event.fallback_tier,
            "timer_reason": event.reason,
        },
    )


def _timer_ended(
    rows: Rows, position: int, event: ev.FallbackTimerFired | ev.FallbackTimerCancelled
) -> None:
    _set(rows, event.task_id, position, dict(_NO_TIMER))


_HANDLERS: dict[type, Handler] = {
    ev.TaskSubmitted: _submitted,
    ev.TaskClassified: _classified,
    ev.TaskEscalated: _escalated,
    ev.TaskDeescalated: _deescalated,
    ev.TaskAssigned: _left_queue,
    ev.TaskDeadLettered: _left_queue,
    ev.TaskCompleted: _finished,
    ev.TaskCancelled: _finished,
    ev.TaskRequeued: _requeued,
    ev.TaskRetried: _retried,
    ev.FallbackTimerStarted: _timer_started,
    ev.FallbackTimerFired: _timer_ended,
    ev.FallbackTimerCancelled: _timer_ended,
}


class QueueProjection:
    """Folds task and timer events into ``rm_queue``."""

    name = NAME
    version = VERSION
    tables: Sequence[Table] = (RM_QUEUE,)

    def handlers_for(self, event_type: type) -> Sequence[Handler]:
        """The handler of ``event_type``, if this read model folds it."""
        return handlers_from(_HANDLERS, event_type)
