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
from collections.abc import Callable, Sequence
from typing import Any, Literal
from uuid import UUID

import msgspec

from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.aggregates import agent as agent_aggregate
from tierlog.domain.aggregates import endpoint as endpoint_aggregate
from tierlog.domain.aggregates import task as task_aggregate
from tierlog.domain.errors import ValidationError

Kind = Literal["task", "agent", "endpoint"]
Ref = tuple[Kind, Any]
"""A record by key: ``("task", UUID)``, ``("agent", agent_id)``, ``("endpoint", id)``."""

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
