"""The tasks read model: each task's current state, routing decision and submission."""

from __future__ import annotations

from collections.abc import Sequence

from domain import events as ev
from domain.records import PRIORITY_RANK
from projections.base import ReadModelWriter, iso, to_json

NAME = "tasks"
TABLES = ("rm_tasks",)
DDL = (
    "CREATE TABLE IF NOT EXISTS rm_tasks ("
    " task_id TEXT PRIMARY KEY, state TEXT NOT NULL, priority TEXT NOT NULL,"
    " priority_rank INTEGER NOT NULL, submit_position BIGINT NOT NULL,"
    " tier TEXT NOT NULL, effective_tier TEXT NOT NULL, generation INTEGER NOT NULL,"
    " retry_count INTEGER NOT NULL, max_retries INTEGER NOT NULL, assigned_to TEXT,"
    " lease_expires_at TEXT, complete_by TEXT, description TEXT NOT NULL,"
    " submission TEXT NOT NULL, classification TEXT, routing_decision TEXT,"
    " dead_letter_reason TEXT, last_error TEXT, result TEXT, submitted_at TEXT NOT NULL,"
    " updated_at TEXT NOT NULL, position BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS rm_tasks_state ON rm_tasks (state, submit_position)",
    "CREATE INDEX IF NOT EXISTS rm_tasks_tier ON rm_tasks (effective_tier, submit_position)",
    "CREATE INDEX IF NOT EXISTS rm_tasks_agent ON rm_tasks (assigned_to)",
)
_SUBMITTED_FIELDS = (
    "description",
    "priority",
    "needed_capabilities",
    "requested_tier",
    "file_hints",
    "verification_steps",
    "success_criteria",
    "repo",
    "branch",
    "metadata",
    "max_retries",
    "complete_by",
    "submitted_by",
    "idempotency_key",
)


def _update(db: ReadModelWriter, event: ev.DomainEvent, position: int, **columns: object) -> None:
    sets = ", ".join(f"{name} = ?" for name in columns)
    db.execute(
        f"UPDATE rm_tasks SET {sets}, updated_at = ?, position = ? WHERE task_id = ?",
        (*columns.values(), iso(event.timestamp), position, str(event.originator_id)),
    )


class TasksProjection:
    """Folds task events into ``rm_tasks``."""

    name = NAME
    tables: Sequence[str] = TABLES
    ddl: Sequence[str] = DDL

    def apply(self, db: ReadModelWriter, position: int, event: ev.DomainEvent) -> None:
        """Fold one event."""
        match event:
            case ev.TaskSubmitted():
                submission = {f: getattr(event, f) for f in _SUBMITTED_FIELDS}
                db.execute(
                    "INSERT INTO rm_tasks (task_id, state, priority, priority_rank,"
                    " submit_position, tier, effective_tier, generation, retry_count,"
                    " max_retries, complete_by, description, submission, submitted_at,"
                    " updated_at, position) VALUES (?, 'queued', ?, ?, ?, 'standard',"
                    " 'standard', 0, 0, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        str(event.originator_id),
                        event.priority,
                        PRIORITY_RANK[event.priority],
                        position,
                        event.max_retries,
                        iso(event.complete_by),
                        event.description,
                        to_json(submission),
                        iso(event.timestamp),
                        iso(event.timestamp),
                        position,
                    ),
                )
            case ev.TaskClassified():
                _update(
                    db,
                    event,
                    position,
                    tier=event.route_tier,
                    effective_tier=event.route_tier,
                    classification=to_json(event.classification),
                )
            case ev.TaskRouted():
                _update(db, event, position, routing_decision=to_json(event.decision))
            case ev.TaskAssigned():
                _update(
                    db,
                    event,
                    position,
                    state="assigned",
                    generation=event.generation,
                    assigned_to=event.agent_id,
                    lease_expires_at=iso(event.lease_expires_at),
                    routing_decision=to_json(event.decision),
                )
            case ev.TaskHeartbeated():
                _update(db, event, position, lease_expires_at=iso(event.lease_expires_at))
            case ev.TaskCompleted():
                _update(
                    db,
                    event,
                    position,
                    state="completed",
                    assigned_to=None,
                    lease_expires_at=None,
                    result=to_json(event.result),
                )
            case ev.TaskFailed():
                _update(
                    db,
                    event,
                    position,
                    retry_count=event.retry_count,
                    assigned_to=None,
                    lease_expires_at=None,
                    last_error=event.error,
                )
            case ev.TaskReclaimed():
                _update(db, event, position, assigned_to=None, lease_expires_at=None)
            case ev.TaskEscalated():
                _update(db, event, position, effective_tier=event.to_tier)
            case ev.TaskRequeued():
                _update(db, event, position, state="queued", generation=event.generation)
            case ev.TaskRetried():
                db.execute(
                    "UPDATE rm_tasks SET state = 'queued', generation = ?, retry_count = 0,"
                    " effective_tier = tier, dead_letter_reason = NULL, complete_by = ?,"
                    " updated_at = ?, position = ? WHERE task_id = ?",
                    (
                        event.generation,
                        iso(event.complete_by),
                        iso(event.timestamp),
                        position,
                        str(event.originator_id),
                    ),
                )
            case ev.TaskDeadLettered():
                _update(
                    db,
                    event,
                    position,
                    state="dead_lettered",
                    assigned_to=None,
                    lease_expires_at=None,
                    dead_letter_reason=event.reason,
                )
            case ev.TaskCancelled():
                _update(db, event, position, state="cancelled")
            case _:
                pass
