"""Step through a log one event at a time, showing the state after each."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from uuid import UUID

from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import events as ev
from tierlog.domain.state import SchedulerState


@dataclass(frozen=True)
class Step:
    """One event and a one-line picture of the state after it."""

    position: int
    event: ev.DomainEvent
    summary: str


def _summary(state: SchedulerState) -> str:
    busy = sum(1 for a in state.agents.values() if a.status == "busy")
    return (
        f"queued={len(state.queue)} timers={len(state.timers)} busy_agents={busy}/"
        f"{len(state.agents)} healthy_endpoints="
        f"{sum(1 for e in state.endpoints.values() if e.status == 'healthy')}"
    )


def _matches(event: ev.DomainEvent, until: str) -> bool:
    if type(event).__name__ == until:
        return True
    try:
        wanted = UUID(until)
    except ValueError:
        return False
    return event.originator_id == wanted or getattr(event, "task_id", None) == wanted


def steps(log: EventLog, *, start: int = 0, until: str | None = None) -> Iterator[Step]:
    """Each event after ``start`` with the state after it; with ``until`` (an event type
    or a task id) only the steps that match it, and the fold runs silently between."""
    state = SchedulerState()
    for position, event in log.iter_events():
        state.apply(event, position)
        if position <= start:
            continue
        if until is None or _matches(event, until):
            yield Step(position, event, _summary(state))
