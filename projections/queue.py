"""The queue read model: queued tasks in queue order, their tier and pending timer.

Rows are kept when a task leaves the queue (``queued = 0``) so a requeue needs no
other table; the queue is ``WHERE queued = 1 ORDER BY priority_rank, submit_position``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from domain import events as ev
from domain.records import PRIORITY_RANK
from projections.base import ReadModelWriter, iso, to_json

NAME = "queue"
TABLES = ("rm_queue",)
DDL = (
    "CREATE TABLE IF NOT EXISTS rm_queue ("
    " task_id TEXT PRIMARY KEY, queued INTEGER NOT NULL, priority TEXT NOT NULL,"
    " priority_rank INTEGER NOT NULL, submit_position BIGINT NOT NULL, tier TEXT NOT NULL,"
    " effective_tier TEXT NOT NULL, escalation_reason TEXT, generation INTEGER NOT NULL,"
    " queued_at TEXT NOT NULL, complete_by TEXT, needed_capabilities TEXT NOT NULL,"
    " description TEXT NOT NULL, timer_fires_at TEXT, timer_fallback_tier TEXT,"
    " timer_reason TEXT, position BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS rm_queue_order ON rm_queue (queued, priority_rank,"
    " submit_position)",
)


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


def _set(db: ReadModelWriter, task_id: object, position: int, **columns: object) -> None:
    sets = ", ".join(f"{name} = ?" for name in columns)
    db.execute(
        f"UPDATE rm_queue SET {sets}, position = ? WHERE task_id = ?",
        (*columns.values(), position, str(task_id)),
    )


class QueueProjection:
    """Folds task and timer events into ``rm_queue``."""

    name = NAME
    tables: Sequence[str] = TABLES
    ddl: Sequence[str] = DDL

    def apply(self, db: ReadModelWriter, position: int, event: ev.DomainEvent) -> None:
        """Fold one event."""
        task_id = event.originator_id
        match event:
            case ev.TaskSubmitted():
                db.execute(
                    "INSERT INTO rm_queue (task_id, queued, priority, priority_rank,"
                    " submit_position, tier, effective_tier, generation, queued_at,"
                    " complete_by, needed_capabilities, description, position)"
                    " VALUES (?, 1, ?, ?, ?, 'standard', 'standard', 0, ?, ?, ?, ?, ?)",
                    (
                        str(task_id),
                        event.priority,
                        PRIORITY_RANK[event.priority],
                        position,
                        iso(event.timestamp),
                        iso(event.complete_by),
                        to_json(event.needed_capabilities),
                        event.description,
                        position,
                    ),
                )
            case ev.TaskClassified():
                _set(db, task_id, position, tier=event.route_tier, effective_tier=event.route_tier)
            case ev.TaskEscalated():
                _set(
                    db,
                    task_id,
                    position,
                    effective_tier=event.to_tier,
                    escalation_reason=event.reason,
                )
            case ev.TaskAssigned() | ev.TaskCancelled() | ev.TaskDeadLettered():
                _set(db, task_id, position, queued=0)
            case ev.TaskRequeued():
                _set(
                    db,
                    task_id,
                    position,
                    queued=1,
                    generation=event.generation,
                    queued_at=iso(event.timestamp),
                )
            case ev.TaskRetried():
                db.execute(
                    "UPDATE rm_queue SET queued = 1, generation = ?, queued_at = ?,"
                    " effective_tier = tier, escalation_reason = NULL, complete_by = ?,"
                    " position = ? WHERE task_id = ?",
                    (
                        event.generation,
                        iso(event.timestamp),
                        iso(event.complete_by),
                        position,
                        str(task_id),
                    ),
                )
            case ev.FallbackTimerStarted():
                _set(
                    db,
                    event.task_id,
                    position,
                    timer_fires_at=iso(event.fires_at),
                    timer_fallback_tier=event.fallback_tier,
                    timer_reason=event.reason,
                )
            case ev.FallbackTimerFired() | ev.FallbackTimerCancelled():
                _set(
                    db,
                    event.task_id,
                    position,
                    timer_fires_at=None,
                    timer_fallback_tier=None,
                    timer_reason=None,
                )
            case _:
                pass
