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
from typing import Any
from uuid import UUID

from tierlog.domain import events as ev
from tierlog.projections.base import (
    ID,
    JSON,
    PRIORITIES,
    PRIORITY,
    TIER,
    TIERS,
    TIME,
    Handler,
    Row,
    Rows,
    Table,
    handlers_from,
    id_bytes,
    iso,
    micros,
    to_json,
)

NAME = "queue"
# 2: completed and cancelled tasks' rows are deleted (version 1 kept every task's row).
# 3: typed columns (issue #16): the id's bytes, integer codes, epoch microseconds.
VERSION = 3
RM_QUEUE = Table(
    "rm_queue",
    (
        ("task_id", "BYTEA NOT NULL", ID),
        ("queued", "INTEGER NOT NULL"),
        ("priority", "INTEGER NOT NULL", PRIORITY),
        ("priority_rank", "INTEGER NOT NULL"),
        ("submit_position", "BIGINT NOT NULL"),
        ("tier", "INTEGER NOT NULL", TIER),
        ("effective_tier", "INTEGER NOT NULL", TIER),
        ("escalation_reason", "TEXT"),
        ("generation", "INTEGER NOT NULL"),
        ("queued_at", "BIGINT NOT NULL", TIME),
        ("complete_by", "TEXT"),
        ("needed_capabilities", "TEXT NOT NULL", JSON),
        ("description", "TEXT NOT NULL"),
        ("timer_fires_at", "BIGINT", TIME),
        ("timer_fallback_tier", "INTEGER", TIER),
        ("timer_reason", "TEXT"),
        ("position", "BIGINT NOT NULL"),
    ),
    key=("task_id",),
    indexes=(
        "CREATE INDEX IF NOT EXISTS rm_queue_order ON rm_queue (queued, priority_rank,"
        " submit_position)",
    ),
)
_at = RM_QUEUE.index
_QUEUED = _at("queued")
_TIER = _at("tier")
_EFFECTIVE_TIER = _at("effective_tier")
_ESCALATION_REASON = _at("escalation_reason")
_GENERATION = _at("generation")
_QUEUED_AT = _at("queued_at")
_COMPLETE_BY = _at("complete_by")
_TIMER_FIRES_AT = _at("timer_fires_at")
_TIMER_FALLBACK_TIER = _at("timer_fallback_tier")
_TIMER_REASON = _at("timer_reason")
_POSITION = _at("position")
_STANDARD = TIERS.code["standard"]


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


def _changed(rows: Rows, task_id: UUID, position: int) -> Row | None:
    """The task's queue row, to change, with the event's position already set."""
    row = rows.change(RM_QUEUE, (id_bytes(task_id),))
    if row is not None:
        row[_POSITION] = position
    return row


def _submitted(rows: Rows, position: int, event: ev.TaskSubmitted) -> None:
    rank = PRIORITIES.code[event.priority]
    values: list[Any] = [
        id_bytes(event.originator_id),
        1,
        rank,
        rank,
        position,
        _STANDARD,
        _STANDARD,
        None,
        0,
        micros(event.timestamp),
        iso(event.complete_by),
        to_json(event.needed_capabilities),
        event.description,
        None,
        None,
        None,
        position,
    ]
    rows.put(RM_QUEUE, values)


def _classified(rows: Rows, position: int, event: ev.TaskClassified) -> None:
    row = _changed(rows, event.originator_id, position)
    if row is not None:
        row[_TIER] = row[_EFFECTIVE_TIER] = TIERS.code[event.route_tier]


def _escalated(rows: Rows, position: int, event: ev.TaskEscalated) -> None:
    row = _changed(rows, event.originator_id, position)
    if row is not None:
        row[_EFFECTIVE_TIER] = TIERS.code[event.to_tier]
        row[_ESCALATION_REASON] = event.reason


def _deescalated(rows: Rows, position: int, event: ev.TaskDeescalated) -> None:
    row = _changed(rows, event.originator_id, position)
    if row is not None:
        row[_EFFECTIVE_TIER] = TIERS.code[event.to_tier]
        row[_ESCALATION_REASON] = None


def _left_queue(rows: Rows, position: int, event: ev.DomainEvent) -> None:
    row = _changed(rows, event.originator_id, position)
    if row is not None:
        row[_QUEUED] = 0


def _finished(rows: Rows, position: int, event: ev.TaskCompleted | ev.TaskCancelled) -> None:
    rows.delete(RM_QUEUE, (id_bytes(event.originator_id),))


def _requeued(rows: Rows, position: int, event: ev.TaskRequeued) -> None:
    row = _changed(rows, event.originator_id, position)
    if row is not None:
        row[_QUEUED] = 1
        row[_GENERATION] = event.generation
        row[_QUEUED_AT] = micros(event.timestamp)


def _retried(rows: Rows, position: int, event: ev.TaskRetried) -> None:
    row = _changed(rows, event.originator_id, position)
    if row is not None:
        row[_QUEUED] = 1
        row[_GENERATION] = event.generation
        row[_QUEUED_AT] = micros(event.timestamp)
        row[_EFFECTIVE_TIER] = row[_TIER]
        row[_ESCALATION_REASON] = None
        row[_COMPLETE_BY] = iso(event.complete_by)


def _timer_started(rows: Rows, position: int, event: ev.FallbackTimerStarted) -> None:
    row = _changed(rows, event.task_id, position)
    if row is not None:
        row[_TIMER_FIRES_AT] = micros(event.fires_at)
        row[_TIMER_FALLBACK_TIER] = TIERS.code[event.fallback_tier]
        row[_TIMER_REASON] = event.reason


def _timer_ended(
    rows: Rows, position: int, event: ev.FallbackTimerFired | ev.FallbackTimerCancelled
) -> None:
    row = _changed(rows, event.task_id, position)
    if row is not None:
        row[_TIMER_FIRES_AT] = row[_TIMER_FALLBACK_TIER] = row[_TIMER_REASON] = None


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
