"""The tasks read model: each task's current state, routing decision and submission."""

from __future__ import annotations

from collections.abc import Sequence

from tierlog.domain import events as ev
from tierlog.domain.aggregates.task import PRIORITY_RANK
from tierlog.projections.base import Handler, Row, Rows, Table, handlers_from, iso, text_id, to_json

NAME = "tasks"
RM_TASKS = Table(
    "rm_tasks",
    (
        ("task_id", "TEXT NOT NULL"),
        ("state", "TEXT NOT NULL"),
        ("priority", "TEXT NOT NULL"),
        ("priority_rank", "INTEGER NOT NULL"),
        ("submit_position", "BIGINT NOT NULL"),
        ("tier", "TEXT NOT NULL"),
        ("effective_tier", "TEXT NOT NULL"),
        ("generation", "INTEGER NOT NULL"),
        ("retry_count", "INTEGER NOT NULL"),
        ("max_retries", "INTEGER NOT NULL"),
        ("assigned_to", "TEXT"),
        ("lease_expires_at", "TEXT"),
        ("complete_by", "TEXT"),
        ("description", "TEXT NOT NULL"),
        ("submission", "TEXT NOT NULL"),
        ("classification", "TEXT"),
        ("routing_decision", "TEXT"),
        ("dead_letter_reason", "TEXT"),
        ("last_error", "TEXT"),
        ("result", "TEXT"),
        ("submitted_at", "TEXT NOT NULL"),
        ("updated_at", "TEXT NOT NULL"),
        ("position", "BIGINT NOT NULL"),
    ),
    key=("task_id",),
    # The table keeps every task (it is the record), so each list the API serves needs an
    # index that yields its rows in submission order from the cursor on: all tasks, by
    # state, by tier. A task by its id is the primary key.
    indexes=(
        "CREATE INDEX IF NOT EXISTS rm_tasks_submitted ON rm_tasks (submit_position)",
        "CREATE INDEX IF NOT EXISTS rm_tasks_state ON rm_tasks (state, submit_position)",
        "CREATE INDEX IF NOT EXISTS rm_tasks_tier ON rm_tasks (effective_tier, submit_position)",
        "CREATE INDEX IF NOT EXISTS rm_tasks_agent ON rm_tasks (assigned_to)",
    ),
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
_FREED: Row = {"assigned_to": None, "lease_expires_at": None}


def _update(rows: Rows, event: ev.DomainEvent, position: int, changes: Row) -> None:
    changes["updated_at"] = iso(event.timestamp)
    changes["position"] = position
    rows.update(RM_TASKS, (text_id(event.originator_id),), changes)


def _submitted(rows: Rows, position: int, event: ev.TaskSubmitted) -> None:
    submission = {f: getattr(event, f) for f in _SUBMITTED_FIELDS}
    when = iso(event.timestamp)
    rows.put(
        RM_TASKS,
        {
            "task_id": text_id(event.originator_id),
            "state": "queued",
            "priority": event.priority,
            "priority_rank": PRIORITY_RANK[event.priority],
            "submit_position": position,
            "tier": "standard",
            "effective_tier": "standard",
            "generation": 0,
            "retry_count": 0,
            "max_retries": event.max_retries,
            "assigned_to": None,
            "lease_expires_at": None,
            "complete_by": iso(event.complete_by),
            "description": event.description,
            "submission": to_json(submission),
            "classification": None,
            "routing_decision": None,
            "dead_letter_reason": None,
            "last_error": None,
            "result": None,
            "submitted_at": when,
            "updated_at": when,
            "position": position,
        },
    )


def _classified(rows: Rows, position: int, event: ev.TaskClassified) -> None:
    _update(
        rows,
        event,
        position,
        {
            "tier": event.route_tier,
            "effective_tier": event.route_tier,
            "classification": to_json(event.classification),
        },
    )


def _routed(rows: Rows, position: int, event: ev.TaskRouted) -> None:
    _update(rows, event, position, {"routing_decision": to_json(event.decision)})


def _assigned(rows: Rows, position: int, event: ev.TaskAssigned) -> None:
    _update(
        rows,
        event,
        position,
        {
            "state": "assigned",
            "generation": event.generation,
            "assigned_to": event.agent_id,
            "lease_expires_at": iso(event.lease_expires_at),
            "routing_decision": to_json(event.decision),
        },
    )


def _heartbeated(rows: Rows, position: int, event: ev.TaskHeartbeated) -> None:
    _update(rows, event, position, {"lease_expires_at": iso(event.lease_expires_at)})


def _completed(rows: Rows, position: int, event: ev.TaskCompleted) -> None:
    _update(
        rows, event, position, {"state": "completed", **_FREED, "result": to_json(event.result)}
    )


def _failed(rows: Rows, position: int, event: ev.TaskFailed) -> None:
    _update(
        rows,
        event,
        position,
        {"retry_count": event.retry_count, **_FREED, "last_error": event.error},
    )


def _reclaimed(rows: Rows, position: int, event: ev.TaskReclaimed) -> None:
    _update(rows, event, position, dict(_FREED))


def _escalated(rows: Rows, position: int, event: ev.TaskEscalated) -> None:
    _update(rows, event, position, {"effective_tier": event.to_tier})


def _deescalated(rows: Rows, position: int, event: ev.TaskDeescalated) -> None:
    _update(rows, event, position, {"effective_tier": event.to_tier})


def _requeued(rows: Rows, position: int, event: ev.TaskRequeued) -> None:
    _update(rows, event, position, {"state": "queued", "generation": event.generation})


def _retried(rows: Rows, position: int, event: ev.TaskRetried) -> None:
    row = rows.get(RM_TASKS, (text_id(event.originator_id),))
    if row is None:
        return
    _update(
        rows,
        event,
        position,
        {
            "state": "queued",
            "generation": event.generation,
            "retry_count": 0,
            "effective_tier": row["tier"],
            "dead_letter_reason": None,
            "complete_by": iso(event.complete_by),
        },
    )


def _dead_lettered(rows: Rows, position: int, event: ev.TaskDeadLettered) -> None:
    _update(
        rows,
        event,
        position,
        {"state": "dead_lettered", **_FREED, "dead_letter_reason": event.reason},
    )


def _cancelled(rows: Rows, position: int, event: ev.TaskCancelled) -> None:
    # A running task's agent and lease go with it (a queued one had none).
    _update(rows, event, position, {"state": "cancelled", **_FREED})


_HANDLERS: dict[type, Handler] = {
    ev.TaskSubmitted: _submitted,
    ev.TaskClassified: _classified,
    ev.TaskRouted: _routed,
    ev.TaskAssigned: _assigned,
    ev.TaskHeartbeated: _heartbeated,
    ev.TaskCompleted: _completed,
    ev.TaskFailed: _failed,
    ev.TaskReclaimed: _reclaimed,
    ev.TaskEscalated: _escalated,
    ev.TaskDeescalated: _deescalated,
    ev.TaskRequeued: _requeued,
    ev.TaskRetried: _retried,
    ev.TaskDeadLettered: _dead_lettered,
    ev.TaskCancelled: _cancelled,
}


class TasksProjection:
    """Folds task events into ``rm_tasks``."""

    name = NAME
    tables: Sequence[Table] = (RM_TASKS,)

    def handlers_for(self, event_type: type) -> Sequence[Handler]:
        """The handler of ``event_type``, if this read model folds it."""
        return handlers_from(_HANDLERS, event_type)
