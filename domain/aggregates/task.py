"""The Task aggregate: its state record, how its events evolve it, and its decisions.

``evolve(task, event, position)`` is the whole life of a task as a fold; the decisions
(``cancel``, ``retry``, ``heartbeat``, ``complete``, ``fail``, ``reclaim``, …) check a
command against the record and return the events that follow, at the task's next
versions. Nothing here touches another aggregate or an index: ``SchedulerState``
composes the aggregates and keeps the queue, the idle agents and the deadlines.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import msgspec
from msgspec.structs import replace

from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.backoff import RetryBackoff, not_before
from tierlog.domain.classification import classification_reason, classify, route_tier
from tierlog.domain.config import TierName
from tierlog.domain.errors import (
    InvalidTransitionError,
    NotYourTaskError,
    StaleGenerationError,
    TaskCancelledError,
)
from tierlog.domain.idempotency import submission_digest

TaskStateName = Literal["queued", "assigned", "completed", "dead_lettered", "cancelled"]
PRIORITY_RANK: dict[str, int] = {"urgent": 0, "high": 1, "normal": 2, "low": 3}


class TaskRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A task as the scheduler needs it; ``version`` is that of its last event."""

    task_id: UUID
    version: int
    position: int
    priority: ev.Priority
    needed_capabilities: tuple[str, ...]
    repo: str | None
    route_tier: TierName
    classification_reason: str
    state: TaskStateName
    generation: int
    retry_count: int
    max_retries: int
    submitted_at: datetime
    queued_at: datetime
    complete_by: datetime | None
    assigned_to: str | None = None
    lease_expires_at: datetime | None = None
    escalated_to: TierName | None = None
    fallback_reason: str | None = None
    routing_decision: ev.RoutingDecision | None = None
    routed_generation: int | None = None
    dead_letter_reason: str | None = None
    # The agent that held the task when it was cancelled (None: no agent held it).
    cancelled_agent: str | None = None
    # The digest of the submission's body, for a task submitted under an
    # Idempotency-Key (``tierlog.domain.idempotency``); None without a key.
    submission_digest: str | None = None
    # Retry backoff (issue #13): the task's own policy, if it set one at submission; the
    # earliest time of its next assignment while requeued after a failure; the agent
    # that failed it last (preferred last for the next attempt).
    retry_backoff_s: float | None = None
    retry_backoff_max_s: float | None = None
    not_before: datetime | None = None
    last_failed_agent: str | None = None

    @property
    def queue_key(self) -> tuple[int, int]:
        """Queue order: priority, then submission order."""
        return (PRIORITY_RANK[self.priority], self.position)

    @property
    def effective_tier(self) -> TierName:
        """The tier the task routes at now: its own, or its fallback once escalated."""
        return self.escalated_to or self.route_tier


# --- evolve: one pure function per event type ----------------------------------------


def _submitted(_: TaskRecord | None, e: ev.TaskSubmitted, position: int) -> TaskRecord:
    # It joins the queue when classified (the next event, always in the same append).
    return TaskRecord(
        task_id=e.originator_id,
        version=e.originator_version,
        position=position,
        priority=e.priority,
        needed_capabilities=e.needed_capabilities,
        repo=e.repo,
        route_tier="standard",
        classification_reason="",
        state="queued",
        generation=0,
        retry_count=0,
        max_retries=e.max_retries,
        submitted_at=e.timestamp,
        queued_at=e.timestamp,
        complete_by=e.complete_by,
        submission_digest=None if e.idempotency_key is None else submission_digest(e),
        retry_backoff_s=e.retry_backoff_s,
        retry_backoff_max_s=e.retry_backoff_max_s,
    )


def _classified(t: TaskRecord, e: ev.TaskClassified, _: int) -> TaskRecord:
    return replace(
        t, version=e.originator_version, route_tier=e.route_tier, classification_reason=e.reason
    )


def _routed(t: TaskRecord, e: ev.TaskRouted, _: int) -> TaskRecord:
    return replace(
        t, version=e.originator_version, routing_decision=e.decision, routed_generation=e.generation
    )


def _assigned(t: TaskRecord, e: ev.TaskAssigned, _: int) -> TaskRecord:
    return replace(
        t,
        version=e.originator_version,
        state="assigned",
        generation=e.generation,
        assigned_to=e.agent_id,
        lease_expires_at=e.lease_expires_at,
        routing_decision=e.decision,
        not_before=None,
    )


def _heartbeated(t: TaskRecord, e: ev.TaskHeartbeated, _: int) -> TaskRecord:
    return replace(t, version=e.originator_version, lease_expires_at=e.lease_expires_at)


def _completed(t: TaskRecord, e: ev.TaskCompleted, _: int) -> TaskRecord:
    return replace(
        t, version=e.originator_version, state="completed", assigned_to=None, lease_expires_at=None
    )


def _failed(t: TaskRecord, e: ev.TaskFailed, _: int) -> TaskRecord:
    return replace(
        t,
        version=e.originator_version,
        retry_count=e.retry_count,
        assigned_to=None,
        lease_expires_at=None,
        last_failed_agent=e.agent_id,
    )


def _reclaimed(t: TaskRecord, e: ev.TaskReclaimed, _: int) -> TaskRecord:
    return replace(t, version=e.originator_version, assigned_to=None, lease_expires_at=None)


def _escalated(t: TaskRecord, e: ev.TaskEscalated, _: int) -> TaskRecord:
    return replace(
        t, version=e.originator_version, escalated_to=e.to_tier, fallback_reason=e.reason
    )


def _requeued(t: TaskRecord, e: ev.TaskRequeued, _: int) -> TaskRecord:
    return replace(
        t,
        version=e.originator_version,
        state="queued",
        generation=e.generation,
        queued_at=e.timestamp,
        not_before=e.not_before,
    )


def _dead_lettered(t: TaskRecord, e: ev.TaskDeadLettered, _: int) -> TaskRecord:
    return replace(
        t,
        version=e.originator_version,
        state="dead_lettered",
        assigned_to=None,
        lease_expires_at=None,
        dead_letter_reason=e.reason,
    )


def _retried(t: TaskRecord, e: ev.TaskRetried, _: int) -> TaskRecord:
    return replace(
        t,
        version=e.originator_version,
        state="queued",
        generation=e.generation,
        retry_count=0,
        queued_at=e.timestamp,
        complete_by=e.complete_by,
        escalated_to=None,
        fallback_reason=None,
        dead_letter_reason=None,
        not_before=None,
    )


def _deescalated(t: TaskRecord, e: ev.TaskDeescalated, _: int) -> TaskRecord:
    return replace(t, version=e.originator_version, escalated_to=None, fallback_reason=None)


def _cancelled(t: TaskRecord, e: ev.TaskCancelled, _: int) -> TaskRecord:
    return replace(
        t,
        version=e.originator_version,
        state="cancelled",
        assigned_to=None,
        lease_expires_at=None,
        cancelled_agent=e.agent_id,
    )


Evolver = Callable[[Any, Any, int], TaskRecord]
EVOLVERS: dict[type[ev.DomainEvent], Evolver] = {
    ev.TaskSubmitted: _submitted,
    ev.TaskClassified: _classified,
    ev.TaskRouted: _routed,
    ev.TaskAssigned: _assigned,
    ev.TaskHeartbeated: _heartbeated,
    ev.TaskCompleted: _completed,
    ev.TaskFailed: _failed,
    ev.TaskReclaimed: _reclaimed,
    ev.TaskEscalated: _escalated,
    ev.TaskRequeued: _requeued,
    ev.TaskDeadLettered: _dead_lettered,
    ev.TaskRetried: _retried,
    ev.TaskCancelled: _cancelled,
    ev.TaskDeescalated: _deescalated,
}
"""Each Task event type's evolve function."""


def evolve(task: TaskRecord | None, event: ev.DomainEvent, position: int) -> TaskRecord:
    """The task after ``event`` (recorded at ``position``); ``None`` before it exists."""
    return EVOLVERS[type(event)](task, event, position)


# --- decisions: a command and the record in, the events that follow out ---------------


def submitted_event(
    command: cmd.SubmitTask, task_id: UUID, now: datetime, complete_by: datetime | None
) -> ev.TaskSubmitted:
    """The ``TaskSubmitted`` fact ``command`` states (``complete_by`` already checked)."""
    return ev.TaskSubmitted(
        originator_id=task_id,
        originator_version=1,
        timestamp=now,
        description=command.description,
        priority=command.priority,
        needed_capabilities=command.needed_capabilities,
        requested_tier=command.complexity_tier,
        file_hints=command.file_hints,
        verification_steps=command.verification_steps,
        success_criteria=command.success_criteria,
        repo=command.repo,
        branch=command.branch,
        metadata=command.metadata,
        max_retries=command.max_retries,
        complete_by=complete_by,
        submitted_by=command.submitted_by,
        idempotency_key=command.idempotency_key,
        retry_backoff_s=command.retry_backoff_s,
        retry_backoff_max_s=command.retry_backoff_max_s,
    )


def submit(command: cmd.SubmitTask, task_id: UUID, now: datetime) -> list[ev.DomainEvent]:
    """A new task's first events: its submission and its classification (SPEC §1.2)."""
    deadline = cmd.complete_by_in_future(command.complete_by, now)
    submitted = submitted_event(command, task_id, now, deadline)
    classification = classify(
        command.description, command.file_hints, command.verification_steps, command.complexity_tier
    )
    classified = ev.TaskClassified(
        originator_id=task_id,
        originator_version=2,
        timestamp=now,
        classification=classification,
        route_tier=route_tier(classification),
        reason=classification_reason(classification),
    )
    return [submitted, classified]


def cancel(task: TaskRecord, command: cmd.CancelTask, now: datetime) -> ev.TaskCancelled:
    """Cancel a queued, dead-lettered or running task; a running one's event names the
    agent that held it and the generation it held it at (SPEC §5.1)."""
    if task.state not in ("queued", "dead_lettered", "assigned"):
        raise InvalidTransitionError(
            f"task {task.task_id} is {task.state}; only queued, assigned or dead-lettered "
            "tasks can be cancelled",
            field="task_id",
        )
    running = task.state == "assigned"
    return ev.TaskCancelled(
        originator_id=task.task_id,
        originator_version=task.version + 1,
        timestamp=now,
        reason=command.reason,
        requested_by=command.requested_by,
        agent_id=task.assigned_to if running else None,
        generation=task.generation if running else None,
    )


def retry(task: TaskRecord, command: cmd.RetryTask, now: datetime) -> ev.TaskRetried:
    """Put a dead-lettered task back in the queue; a deadline that passed is dropped."""
    if task.state != "dead_lettered":
        raise InvalidTransitionError(
            f"task {task.task_id} is {task.state}; only dead-lettered tasks can be retried",
            field="task_id",
        )
    deadline = task.complete_by if task.complete_by and task.complete_by > now else None
    return ev.TaskRetried(
        originator_id=task.task_id,
        originator_version=task.version + 1,
        timestamp=now,
        generation=task.generation + 1,
        requested_by=command.requested_by,
        complete_by=deadline,
    )


def check_held(task: TaskRecord, agent_id: str, generation: int) -> None:
    """Refuse unless ``agent_id`` holds the task at ``generation`` (SPEC §1.1).

    The agent a running task was cancelled from hears ``cancelled`` for that
    generation, so it knows to stop the work rather than retry.
    """
    if _cancelled_from(task, agent_id, generation):
        raise TaskCancelledError(
            f"task {task.task_id} was cancelled while agent {agent_id} held it "
            f"(generation {generation}): stop the work",
            field="task_id",
        )
    if generation != task.generation:
        raise StaleGenerationError(
            f"generation {generation} of task {task.task_id} is stale: not the current one",
            field="generation",
        )
    if task.state != "assigned":
        raise InvalidTransitionError(
            f"task {task.task_id} is {task.state}, not assigned", field="task_id"
        )
    if task.assigned_to != agent_id:
        raise NotYourTaskError(
            f"task {task.task_id} is assigned to another agent", field="agent_id"
        )


def _cancelled_from(task: TaskRecord, agent_id: str, generation: int) -> bool:
    return (
        task.state == "cancelled"
        and task.cancelled_agent == agent_id
        and generation == task.generation
    )


def heartbeat(task: TaskRecord, now: datetime, lease_s: float) -> ev.TaskHeartbeated:
    """Extend the lease of a held task; a lease that expired cannot be extended."""
    assert task.assigned_to is not None
    if task.lease_expires_at is not None and task.lease_expires_at <= now:
        raise StaleGenerationError(
            f"the lease on task {task.task_id} expired at "
            f"{task.lease_expires_at.isoformat()}; it is being reclaimed",
            field="generation",
        )
    return ev.TaskHeartbeated(
        originator_id=task.task_id,
        originator_version=task.version + 1,
        timestamp=now,
        agent_id=task.assigned_to,
        generation=task.generation,
        lease_expires_at=now + timedelta(seconds=lease_s),
    )


def complete(task: TaskRecord, result: Any, now: datetime) -> ev.TaskCompleted:
    """The held task is done."""
    assert task.assigned_to is not None
    return ev.TaskCompleted(
        originator_id=task.task_id,
        originator_version=task.version + 1,
        timestamp=now,
        agent_id=task.assigned_to,
        generation=task.generation,
        result=result,
    )


def fail(
    task: TaskRecord, error: str, now: datetime, backoff: RetryBackoff | None = None
) -> list[ev.DomainEvent]:
    """The held task failed: requeued while retries remain (not before its backoff has
    passed: the task's own policy, else ``backoff``), else dead-lettered."""
    assert task.assigned_to is not None
    failures = task.retry_count + 1
    failed = ev.TaskFailed(
        originator_id=task.task_id,
        originator_version=task.version + 1,
        timestamp=now,
        agent_id=task.assigned_to,
        generation=task.generation,
        error=error,
        retry_count=failures,
    )
    then: ev.DomainEvent
    if failures >= task.max_retries:
        then = dead_letter(task, "max_retries_exhausted", now, version=task.version + 2)
    else:
        wait = not_before(task.task_id, failures, task_backoff(task, backoff), now)
        then = requeue(task, "failed", now, version=task.version + 2, not_before=wait)
    return [failed, then]


def task_backoff(task: TaskRecord, default: RetryBackoff | None) -> RetryBackoff:
    """The task's retry backoff: each value it was submitted with, else ``default``'s
    (no default: no wait, unless the task set one)."""
    fallback = default or RetryBackoff(base_s=0.0, max_s=task.retry_backoff_s or 0.0)
    own_base, own_max = task.retry_backoff_s, task.retry_backoff_max_s
    return RetryBackoff(
        base_s=fallback.base_s if own_base is None else own_base,
        max_s=fallback.max_s if own_max is None else own_max,
    )


def requeue(
    task: TaskRecord,
    reason: str,
    now: datetime,
    *,
    version: int,
    not_before: datetime | None = None,
) -> ev.TaskRequeued:
    """Back to the queue at the next generation (after a failure: ``not_before``)."""
    return ev.TaskRequeued(
        originator_id=task.task_id,
        originator_version=version,
        timestamp=now,
        generation=task.generation + 1,
        reason=reason,
        not_before=not_before,
    )


def dead_letter(
    task: TaskRecord, reason: str, now: datetime, *, version: int | None = None
) -> ev.TaskDeadLettered:
    """Out of the queue for good, unless an operator retries it."""
    return ev.TaskDeadLettered(
        originator_id=task.task_id,
        originator_version=task.version + 1 if version is None else version,
        timestamp=now,
        reason=reason,
    )


def reclaim(task: TaskRecord, reason: str, now: datetime) -> list[ev.DomainEvent]:
    """Take the task back from its agent and return it to the queue (SPEC §1.6)."""
    assert task.assigned_to is not None
    reclaimed = ev.TaskReclaimed(
        originator_id=task.task_id,
        originator_version=task.version + 1,
        timestamp=now,
        agent_id=task.assigned_to,
        reason=reason,
        previous_generation=task.generation,
    )
    return [reclaimed, requeue(task, reason, now, version=task.version + 2)]


def is_overdue(task: TaskRecord, now: datetime) -> bool:
    """Whether the task's ``complete_by`` has passed.

    An overdue task is not handed to an agent again: it would be reclaimed at once.
    It waits in the queue until its TTL, a cancel, or a manual retry after that.
    """
    return task.complete_by is not None and task.complete_by <= now


def escalate(
    task: TaskRecord, from_tier: TierName, to_tier: TierName, reason: str, now: datetime
) -> ev.TaskEscalated:
    """The task's fallback timer fired: it routes at the tier above from now on."""
    return ev.TaskEscalated(
        originator_id=task.task_id,
        originator_version=task.version + 1,
        timestamp=now,
        from_tier=from_tier,
        to_tier=to_tier,
        reason=reason,
    )


def route(
    task: TaskRecord, decision: ev.RoutingDecision, now: datetime, reason: str | None = None
) -> ev.TaskRouted:
    """A routing decision for the task's next generation (SPEC §1.3)."""
    return ev.TaskRouted(
        originator_id=task.task_id,
        originator_version=task.version + 1,
        timestamp=now,
        generation=task.generation + 1,
        decision=decision,
        reason=reason,
    )


def deescalate(task: TaskRecord, reason: str, now: datetime) -> ev.TaskDeescalated:
    """The task's fallback tier cannot route it but its own tier can again: back to it."""
    assert task.escalated_to is not None
    return ev.TaskDeescalated(
        originator_id=task.task_id,
        originator_version=task.version + 1,
        timestamp=now,
        from_tier=task.escalated_to,
        to_tier=task.route_tier,
        reason=reason,
    )


def assign(
    task: TaskRecord, agent_id: str, decision: ev.RoutingDecision, now: datetime, lease_s: float
) -> ev.TaskAssigned:
    """The task goes to an agent at its next generation, with a lease."""
    return ev.TaskAssigned(
        originator_id=task.task_id,
        originator_version=task.version + 1,
        timestamp=now,
        agent_id=agent_id,
        generation=task.generation + 1,
        decision=decision,
        lease_expires_at=now + timedelta(seconds=lease_s),
    )
