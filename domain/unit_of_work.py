"""The unit of work: events decided in one batch, applied to state as they are decided.

Applying at once lets later decisions in the batch see earlier ones (an agent taken
by one task is not offered to the next). If the append then loses a race, the
runtime rolls the state back and decides again on fresh state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from tierlog.domain import events as ev
from tierlog.domain.state import SchedulerState

E = TypeVar("E", bound=ev.DomainEvent)


class UnitOfWork:
    """Collects the events of one batch, with their aggregate versions, in order."""

    def __init__(self, state: SchedulerState) -> None:
        self.state = state
        self.events: list[ev.DomainEvent] = []
        self.first_position = state.position + 1

    def emit(self, event: ev.DomainEvent) -> None:
        """Apply ``event`` at the position it is expected to get, and keep it."""
        self.state.apply(event, self.state.position + 1)
        self.events.append(event)

    def task_event(self, cls: type[E], task_id: UUID, now: datetime, **fields: Any) -> E:
        """Build the next event of a task, at the task's next version, and emit it."""
        task = self.state.tasks.get(task_id)
        version = task.version + 1 if task is not None else 1
        event = cls(originator_id=task_id, originator_version=version, timestamp=now, **fields)
        self.emit(event)
        return event

    def scheduler_event(self, cls: type[E], now: datetime, **fields: Any) -> E:
        """Build and emit the next event of the scheduler aggregate."""
        event = cls(
            originator_id=ev.SCHEDULER_ID,
            originator_version=self.state.scheduler_version + 1,
            timestamp=now,
            **fields,
        )
        self.emit(event)
        return event

    def agent_event(self, cls: type[E], agent_id: str, now: datetime, **fields: Any) -> E:
        """Build and emit the next event of an agent."""
        fields["agent_id"] = agent_id
        event = cls(
            originator_id=ev.agent_aggregate_id(agent_id),
            originator_version=self.state.version_of_agent(agent_id) + 1,
            timestamp=now,
            **fields,
        )
        self.emit(event)
        return event

    def endpoint_event(self, cls: type[E], endpoint_id: str, now: datetime, **fields: Any) -> E:
        """Build and emit the next event of an endpoint."""
        fields["endpoint_id"] = endpoint_id
        event = cls(
            originator_id=ev.endpoint_aggregate_id(endpoint_id),
            originator_version=self.state.version_of_endpoint(endpoint_id) + 1,
            timestamp=now,
            **fields,
        )
        self.emit(event)
        return event
