"""The tasks read model: each task's current state, routing decision and submission."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tierlog.domain import events as ev
from tierlog.projections.base import (
    ID,
    JSON,
    PRIORITIES,
    PRIORITY,
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
    iso,
    micros,
    to_json,
)

NAME = "tasks"
# 2: typed columns (issue #16): the id's bytes, integer codes, epoch microseconds.
VERSION = 2
RM_TASKS = Table(
    "rm_tasks",
    (
        ("task_id", "BYTEA NOT NULL", ID),
        ("state", "INTEGER NOT NULL", STATE),
        ("priority", "INTEGER NOT NULL", PRIORITY),
        ("priority_rank", "INTEGER NOT NULL"),
        ("submit_position", "BIGINT NOT NULL"),
        ("tier", "INTEGER NOT NULL", TIER),
        ("effective_tier", "INTEGER NOT NULL", TIER),
        ("generation", "INTEGER NOT NULL"),
        ("retry_count", "INTEGER NOT NULL"),
        ("max_retries", "INTEGER NOT NULL"),
        ("assigned_to", "TEXT"),
        ("lease_expires_at", "BIGINT", TIME),
        # A deadline keeps the zone it was given in (it is written once per task).
        ("complete_by", "TEXT"),
        ("description", "TEXT NOT NULL"),
        ("submission", "TEXT NOT NULL", JSON),
        ("classification", "TEXT", JSON),
        ("routing_decision", "TEXT", JSON),
        ("dead_letter_reason", "TEXT"),
        ("last_error", "TEXT"),
        ("result", "TEXT", JSON),
        ("submitted_at", "BIGINT NOT NULL", TIME),
        ("updated_at", "BIGINT NOT NULL", TIME),
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
_at = RM_TASKS.index
_STATE = _at("state")
_TIER = _at("tier")
_EFFECTIVE_TIER = _at("effective_tier")
_GENERATION = _at("generation")
_RETRY_COUNT = _at("retry_count")
_ASSIGNED_TO = _at("assigned_to")
_LEASE_EXPIRES_AT = _at("lease_expires_at")
_COMPLETE_BY = _at("complete_by")
_CLASSIFICATION = _at("classification")
_ROUTING_DECISION = _at("routing_decision")
_DEAD_LETTER_REASON = _at("dead_letter_reason")
_LAST_ERROR = _at("last_error")
_RESULT = _at("result")
_UPDATED_AT = _at("updated_at")
_POSITION = _at("position")

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
_QUEUED, _ASSIGNED, _COMPLETED, _DEAD_LETTERED, _CANCELLED = (
    STATES.code[s] for s in ("queued", "assigned", "completed", "dead_lettered", "cancelled")
)
_STANDARD = TIERS.code["standard"]


def _changed(rows: Rows, event: ev.DomainEvent, position: int) -> Row | None:
    """The task's row, to change, with the event's time and position already set."""
    row = rows.change(RM_TASKS, (id_bytes(event.originator_id),))
    if row is not None:
        row[_UPDATED_AT] = micros(event.timestamp)
        row[_POSITION] = position
    return row


def _freed(row: Row) -> None:
    row[_ASSIGNED_TO] = None
    row[_LEASE_EXPIRES_AT] = None


def _submitted(rows: Rows, position: int, event: ev.TaskSubmitted) -> None:
    submission = {f: getattr(event, f) for f in _SUBMITTED_FIELDS}
    when = micros(event.timestamp)
    rank = PRIORITIES.code[event.priority]
    values: list[Any] = [
        id_bytes(event.originator_id),
        _QUEUED,
        rank,
        rank,
        position,
        _STANDARD,
        _STANDARD,
        0,
        0,
        event.max_retries,
        None,
        None,
        iso(event.complete_by),
        event.description,
        to_json(submission),
        None,
        None,
        None,
        None,
        None,
        when,
        when,
        position,
    ]
    rows.put(RM_TASKS, values)


def _classified(rows: Rows, position: int, event: ev.TaskClassified) -> None:
    row = _changed(rows, event, position)
    if row is not None:
        row[_TIER] = row[_EFFECTIVE_TIER] = TIERS.code[event.route_tier]
        row[_CLASSIFICATION] = to_json(event.classification)


def _routed(rows: Rows, position: int, event: ev.TaskRouted) -> None:
    row = _changed(rows, event, position)
    if row is not None:
        row[_ROUTING_DECISION] = to_json(event.decision)


def _assigned(rows: Rows, position: int, event: ev.TaskAssigned) -> None:
    row = _changed(rows, event, position)
    if row is not None:
        row[_STATE] = _ASSIGNED
        row[_GENERATION] = event.generation
        row[_ASSIGNED_TO] = event.agent_id
        row[_LEASE_EXPIRES_AT] = micros(event.lease_expires_at)
        row[_ROUTING_DECISION] = to_json(event.decision)


def _heartbeated(rows: Rows, position: int, event: ev.TaskHeartbeated) -> None:
    row = _changed(rows, event, position)
    if row is not None:
        row[_LEASE_EXPIRES_AT] = micros(event.lease_expires_at)


def _completed(rows: Rows, position: int, event: ev.TaskCompleted) -> None:
    row = _changed(rows, event, position)
    if row is not None:
        row[_STATE] = _COMPLETED
        _freed(row)
        row[_RESULT] = to_json(event.result)


def _failed(rows: Rows, position: int, event: ev.TaskFailed) -> None:
    row = _changed(rows, event, position)
    if row is not None:
        row[_RETRY_COUNT] = event.retry_count
        _freed(row)
        row[_LAST_ERROR] = event.error


def _reclaimed(rows: Rows, position: int, event: ev.TaskReclaimed) -> None:
    row = _changed(rows, event, position)
    if row is not None:
        _freed(row)


def _escalated(rows: Rows, position: int, event: ev.TaskEscalated | ev.TaskDeescalated) -> None:
    row = _changed(rows, event, position)
    if row is not None:
        row[_EFFECTIVE_TIER] = TIERS.code[event.to_tier]


def _requeued(rows: Rows, position: int, event: ev.TaskRequeued) -> None:
    row = _changed(rows, event, position)
    if row is not None:
        row[_STATE] = _QUEUED
        row[_GENERATION] = event.generation


def _retried(rows: Rows, position: int, event: ev.TaskRetried) -> None:
    row = _changed(rows, event, position)
    if row is not None:
        row[_STATE] = _QUEUED
        row[_GENERATION] = event.generation
        row[_RETRY_COUNT] = 0
        row[_EFFECTIVE_TIER] = row[_TIER]
        row[_DEAD_LETTER_REASON] = None
        row[_COMPLETE_BY] = iso(event.complete_by)


def _dead_lettered(rows: Rows, position: int, event: ev.TaskDeadLettered) -> None:
    row = _changed(rows, event, position)
    if row is not None:
        row[_STATE] = _DEAD_LETTERED
        _freed(row)
        row[_DEAD_LETTER_REASON] = event.reason


def _cancelled(rows: Rows, position: int, event: ev.TaskCancelled) -> None:
    # A running task's agent and lease go with it (a queued one had none).
    row = _changed(rows, event, position)
    if row is not None:
        row[_STATE] = _CANCELLED
        _freed(row)


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
    ev.TaskDeescalated: _escalated,
    ev.TaskRequeued: _requeued,
    ev.TaskRetried: _retried,
    ev.TaskDeadLettered: _dead_lettered,
    ev.TaskCancelled: _cancelled,
}


class TasksProjection:
    """Folds task events into ``rm_tasks``."""

    name = NAME
    version = VERSION
    tables: Sequence[Table] = (RM_TASKS,)

    def handlers_for(self, event_type: type) -> Sequence[Handler]:
        """The handler of ``event_type``, if this read model folds it."""
        return handlers_from(_HANDLERS, event_type)
