"""What the scheduler keeps in memory, and how a record that left is found again.

A scheduler that runs for months must hold the work in flight, not its history. With a
``Retention`` policy, ``SchedulerState`` lets a record go once nothing live needs it:
a task that completed, was cancelled or was dead-lettered; an agent or an endpoint that
was deregistered. It keeps each for a grace window (and at most a number of them) so
late commands are answered from memory, then drops it. Which records leave, and when, is
a function of the events alone (their timestamps), so state folded from a checkpoint
equals state folded from position 0.

A record that left is still the record its own stream folds to: the runtime reads that
stream from the store by key (``Ref``) and hands the record back before a command or an
event needs it. This module is pure: it names what to look up (``refs_of``), and folds a
stream into a record (``record_from_stream``); the runtime does the reading.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec

from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.aggregates import agent as agent_aggregate
from tierlog.domain.aggregates import endpoint as endpoint_aggregate
from tierlog.domain.aggregates import task as task_aggregate
from tierlog.domain.aggregates.agent import AgentRecord
from tierlog.domain.aggregates.endpoint import EndpointRecord
from tierlog.domain.aggregates.scheduler import PendingTimer
from tierlog.domain.aggregates.task import TaskRecord
from tierlog.domain.errors import ValidationError
from tierlog.domain.undo import Recorded

Kind = Literal["task", "agent", "endpoint"]
Ref = tuple[Kind, Any]
"""A record by key: ``("task", UUID)``, ``("agent", agent_id)``, ``("endpoint", id)``."""
# (settled at: POSIX seconds, kind, key, the record's version when it settled)
Settled = tuple[float, Kind, Any, int]

SETTLED_GRACE_S = 30.0
SETTLED_MAX = 2000


class Retention(msgspec.Struct, frozen=True, kw_only=True):
    """How long records that nothing live needs stay in memory.

    A settled record (a task completed, cancelled or dead-lettered; an agent or endpoint
    deregistered) leaves at the first event stamped ``settled_grace_s`` after it settled,
    or as soon as more than ``settled_max`` settled records are kept (the oldest first).
    """

    settled_grace_s: float = SETTLED_GRACE_S
    settled_max: int = SETTLED_MAX

    def __post_init__(self) -> None:
        if not math.isfinite(self.settled_grace_s) or self.settled_grace_s < 0:
            raise ValidationError(
                "settled_grace_s must be a finite number of seconds, 0 or more",
                field="settled_grace_s",
            )
        if self.settled_max < 0:
            raise ValidationError("settled_max must be 0 or more", field="settled_max")


def aggregate_id(ref: Ref) -> UUID:
    """The id of the stream that holds ``ref``'s record."""
    kind, key = ref
    if kind == "task":
        return key  # type: ignore[no-any-return]
    if kind == "agent":
        return ev.agent_aggregate_id(key)
    return ev.endpoint_aggregate_id(key)


def _task_refs(command: Any) -> tuple[Ref, ...]:
    return (("task", command.task_id),)


def _held_task_refs(command: Any) -> tuple[Ref, ...]:
    return (("task", command.task_id), ("agent", command.agent_id))


def _submit_refs(command: cmd.SubmitTask) -> tuple[Ref, ...]:
    key = command.idempotency_key
    return () if key is None else (("task", ev.idempotent_task_id(key)),)


def _agent_refs(command: Any) -> tuple[Ref, ...]:
    return (("agent", command.agent_id),)


def _endpoint_refs(command: Any) -> tuple[Ref, ...]:
    return (("endpoint", command.endpoint_id),)


def _new_endpoint_refs(command: cmd.RegisterEndpoint) -> tuple[Ref, ...]:
    return (("endpoint", f"{command.host}:{command.port}"),)


_REFS: dict[type[cmd.Command], Callable[[Any], tuple[Ref, ...]]] = {
    cmd.SubmitTask: _submit_refs,
    cmd.CancelTask: _task_refs,
    cmd.RetryTask: _task_refs,
    cmd.HeartbeatTask: _held_task_refs,
    cmd.CompleteTask: _held_task_refs,
    cmd.FailTask: _held_task_refs,
    cmd.RegisterAgent: _agent_refs,
    cmd.DeregisterAgent: _agent_refs,
    cmd.MarkAgentOffline: _agent_refs,
    cmd.CheckInAgent: _agent_refs,
    cmd.RegisterEndpoint: _new_endpoint_refs,
    cmd.ReportHealth: _endpoint_refs,
    cmd.ReportResources: _endpoint_refs,
    cmd.DeregisterEndpoint: _endpoint_refs,
}


def refs_of(command: cmd.Command) -> tuple[Ref, ...]:
    """The records ``command`` is decided from (an HTTP body class derived from a
    command names what its base names)."""
    for command_type in type(command).__mro__:
        refs = _REFS.get(command_type)
        if refs is not None:
            return refs(command)
    return ()


def record_from_stream(kind: Kind, stream: Sequence[tuple[int, ev.DomainEvent]]) -> Any:
    """The record one aggregate's own events fold to (None for an empty stream).

    A task's and an endpoint's records depend on their own streams only. An agent's is
    freed by its task's events, which are not in its stream; a record looked up here
    has been deregistered (or gone offline), and both free it first, so it is freed.
    """
    record: Any = None
    if kind == "task":
        for position, event in stream:
            record = task_aggregate.evolve(record, event, position)
    elif kind == "agent":
        for _, event in stream:
            record = agent_aggregate.evolve(record, event)
        if record is not None:
            record = agent_aggregate.released(record)
    else:
        for position, event in stream:
            record = endpoint_aggregate.evolve(record, event, position)
    return record


class WorkingSet(Recorded):
    """The records a ``SchedulerState`` holds, found by key wherever they are (in
    memory, or handed back in ``recalled``), and how settled ones leave memory under a
    ``Retention`` policy. A part of ``SchedulerState``, which sets the attributes."""

    retention: Retention | None
    tasks: dict[UUID, TaskRecord]
    agents: dict[str, AgentRecord]
    endpoints: dict[str, EndpointRecord]
    timers: dict[UUID, PendingTimer]
    agent_tokens: dict[str, str]
    settled: deque[Settled]
    recalled: dict[Ref, Any]

    def task(self, task_id: UUID) -> TaskRecord | None:
        """The task's record, in memory or handed back in ``recalled`` (None: unknown)."""
        task = self.tasks.get(task_id)
        return task if task is not None else self.recalled.get(("task", task_id))

    def agent(self, agent_id: str) -> AgentRecord | None:
        """The agent's record, in memory or handed back in ``recalled`` (None: unknown)."""
        agent = self.agents.get(agent_id)
        return agent if agent is not None else self.recalled.get(("agent", agent_id))

    def endpoint(self, endpoint_id: str) -> EndpointRecord | None:
        """The endpoint's record, in memory or handed back in ``recalled``."""
        found = self.endpoints.get(endpoint_id)
        return found if found is not None else self.recalled.get(("endpoint", endpoint_id))

    def holds(self, ref: Ref) -> bool:
        """Whether ``ref``'s record is in memory (or already handed back)."""
        kind, key = ref
        table: dict[Any, Any] = (
            self.tasks if kind == "task" else self.agents if kind == "agent" else self.endpoints
        )
        return key in table or ref in self.recalled

    def missing_for(self, event: ev.DomainEvent) -> Ref | None:
        """The record that left memory and that folding ``event`` needs (None: none).

        Only with a retention policy: a task event after its submission, an endpoint
        event, an agent event after its registration, of a record not held.
        """
        if self.retention is None:
            return None
        event_type = type(event)
        ref: Ref
        if event_type in task_aggregate.EVOLVERS:
            if event_type is ev.TaskSubmitted:
                return None
            ref = ("task", event.originator_id)
        elif event_type in endpoint_aggregate.EVOLVERS:
            ref = ("endpoint", event.endpoint_id)  # type: ignore[attr-defined]
        elif event_type in agent_aggregate.EVOLVERS and event_type is not ev.AgentRegistered:
            ref = ("agent", event.agent_id)  # type: ignore[attr-defined]
        else:
            return None
        return None if self.holds(ref) else ref

    def _settle(self, at: datetime, kind: Kind, key: Any, version: int) -> None:
        if self.retention is None:
            return
        entry: Settled = (at.timestamp(), kind, key, version)
        self.settled.append(entry)
        if self.undo is not None:
            self.undo.steps += (self.settled, "appended", entry)

    def _let_settled_go(self, now: float) -> None:
        assert self.retention is not None
        cutoff = now - self.retention.settled_grace_s
        most = self.retention.settled_max
        settled = self.settled
        while settled and (settled[0][0] <= cutoff or len(settled) > most):
            entry = settled.popleft()
            if self.undo is not None:
                self.undo.steps += (settled, "popped", entry)
            self._evict(entry, now)

    def _evict(self, entry: Settled, now: float) -> None:
        """Drop a settled record unless it changed since (then it settles again later)."""
        _, kind, key, version = entry
        if kind == "task":
            task = self.tasks.get(key)
            if task is None or task.version != version:
                return
            if key in self.timers:  # a pending timer still names it: wait another window
                self._settle_again(entry, now)
                return
            self._discard(self.tasks, key)
            self.recalled[("task", key)] = task
        elif kind == "agent":
            agent = self.agents.get(key)
            if agent is None or agent.version != version:
                return
            self._discard(self.agents, key)
            token = agent.token_sha256
            if token is not None and self.agent_tokens.get(token) == key:
                self._discard(self.agent_tokens, token)
            self.recalled[("agent", key)] = agent
        else:
            endpoint = self.endpoints.get(key)
            if endpoint is None or endpoint.version != version:
                return
            self._discard(self.endpoints, key)
            self.recalled[("endpoint", key)] = endpoint

    def _settle_again(self, entry: Settled, now: float) -> None:
        _, kind, key, version = entry
        again: Settled = (now, kind, key, version)
        self.settled.append(again)
        if self.undo is not None:
            self.undo.steps += (self.settled, "appended", again)
