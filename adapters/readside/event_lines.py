"""One readable line per event, for the dashboard's live feed.

The events people watch for get a sentence; any other (including event types added
later) gets its type's fields as ``key=value``, so nothing is ever left out.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec

from tierlog.domain import events as ev

_HIDDEN = frozenset({"originator_id", "originator_version", "timestamp", "token_sha256"})
_LONGEST_VALUE = 60


def _short(value: Any) -> str:
    listed = isinstance(value, list | tuple)
    text = "[" + ", ".join(map(str, value)) + "]" if listed else str(value)
    return text if len(text) <= _LONGEST_VALUE else text[: _LONGEST_VALUE - 1] + "…"


def _route(d: ev.RoutingDecision) -> str:
    where = f" {d.selected_endpoint} ({d.selected_model})" if d.selected_endpoint else ""
    fallback = (
        f", fallback from {d.fallback_from_tier}: {d.fallback_reason}" if d.fallback_used else ""
    )
    return f"{d.effective_tier} -> {d.target_type}{where}{fallback}"


def _sentence(event: ev.DomainEvent) -> str | None:
    match event:
        case ev.TaskSubmitted():
            by = event.submitted_by
            return f"submitted ({event.priority}) by {by}: {_short(event.description)}"
        case ev.TaskClassified():
            return f"classified {event.route_tier}: {_short(event.reason)}"
        case ev.TaskRouted():
            return f"routed {_route(event.decision)}"
        case ev.TaskAssigned():
            return f"assigned to {event.agent_id} (generation {event.generation})"
        case ev.AgentReserved():
            return f"{event.agent_id} reserved for task {str(event.task_id)[-8:]}"
        case ev.TaskCompleted():
            return f"completed by {event.agent_id}"
        case ev.TaskFailed():
            return f"failed by {event.agent_id}: {_short(event.error)}"
        case ev.TaskEscalated():
            return f"escalated {event.from_tier} -> {event.to_tier} ({event.reason})"
        case ev.FallbackTimerStarted():
            return (
                f"timer started: no candidate at {event.original_tier} ({event.reason}),"
                f" falls back to {event.fallback_tier} at {event.fires_at.isoformat()}"
            )
        case ev.FallbackTimerFired():
            return f"timer fired after {event.wait_ms} ms: -> {event.fallback_tier}"
        case ev.FallbackTimerCancelled():
            return f"timer cancelled: {event.reason}"
        case ev.EndpointHealthReported():
            return f"{event.endpoint_id} is {event.status} (failures {event.consecutive_failures})"
    return None


def event_line(event: ev.DomainEvent) -> str:
    """The event as one line of text."""
    sentence = _sentence(event)
    if sentence is not None:
        return sentence
    fields = msgspec.to_builtins(event)
    shown = ", ".join(
        f"{key}={_short(value)}" for key, value in fields.items() if key not in _HIDDEN
    )
    return shown or type(event).__name__


def task_of(event: ev.DomainEvent) -> UUID | None:
    """The task an event concerns (its own stream, or the task a timer or a
    reservation names), if any."""
    if type(event).__name__.startswith("Task"):
        return event.originator_id
    task_id = getattr(event, "task_id", None)
    return task_id if isinstance(task_id, UUID) else None
