"""The Agent aggregate: its state record, how its events evolve it, and its decisions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec
from msgspec.structs import replace

from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.errors import InvalidTransitionError, NotFoundError

AgentStatus = Literal["idle", "busy", "offline", "deregistered"]


def host_of(address: str | None) -> str | None:
    """The host part of an Ollama address: ``http://gpu-a:11434/`` → ``gpu-a``."""
    if not address:
        return None
    host = address.split("://", 1)[-1].split("/", 1)[0]
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class AgentRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An agent: what it can do, where its Ollama is, and what it holds."""

    agent_id: str
    version: int
    capabilities: frozenset[str]
    ollama_host: str | None
    status: AgentStatus
    task_id: UUID | None = None
    generation: int | None = None
    token_sha256: str | None = None
    # The task (and generation) cancelled while this agent held it, until the agent
    # takes another task or registers again: its poll says so (409 ``cancelled``).
    cancelled: tuple[UUID, int] | None = None
    # Liveness (issue #13): why it went offline, and when it last became idle (its
    # registration, the end of its last task, or its return).
    offline_reason: str | None = None
    idle_since: datetime | None = None


# --- evolve ----------------------------------------------------------------------------


def _registered(_: AgentRecord | None, e: ev.AgentRegistered) -> AgentRecord:
    return AgentRecord(
        agent_id=e.agent_id,
        version=e.originator_version,
        capabilities=frozenset(e.capabilities),
        ollama_host=e.ollama_host,
        status="idle",
        token_sha256=e.token_sha256,
        idle_since=e.timestamp,
    )


def _reserved(a: AgentRecord, e: ev.AgentReserved) -> AgentRecord:
    return replace(
        a,
        version=e.originator_version,
        status="busy",
        task_id=e.task_id,
        generation=e.generation,
        cancelled=None,
    )


def _went_offline(a: AgentRecord, e: ev.AgentWentOffline) -> AgentRecord:
    return replace(a, version=e.originator_version, status="offline", offline_reason=e.reason)


def _came_back(a: AgentRecord, e: ev.AgentCameBack) -> AgentRecord:
    return replace(
        a, version=e.originator_version, status="idle", offline_reason=None, idle_since=e.timestamp
    )


def _deregistered(a: AgentRecord, e: ev.AgentDeregistered) -> AgentRecord:
    return replace(a, version=e.originator_version, status="deregistered")


EVOLVERS: dict[type[ev.DomainEvent], Callable[[Any, Any], AgentRecord]] = {
    ev.AgentRegistered: _registered,
    ev.AgentReserved: _reserved,
    ev.AgentWentOffline: _went_offline,
    ev.AgentCameBack: _came_back,
    ev.AgentDeregistered: _deregistered,
}
"""Each Agent event type's evolve function."""


def evolve(agent: AgentRecord | None, event: ev.DomainEvent) -> AgentRecord:
    """The agent after ``event``; ``None`` before it first registered."""
    return EVOLVERS[type(event)](agent, event)


def released(
    agent: AgentRecord, at: datetime | None = None, cancelled: tuple[UUID, int] | None = None
) -> AgentRecord:
    """The agent once the task it held has left it (completed, failed, reclaimed…) at
    ``at``.

    Not an agent event: the task's event is the fact, and the agent is free again
    (idle if it was busy, since ``at``; an offline agent stays offline). ``cancelled`` is
    the task and generation when the task left because it was cancelled.
    """
    if agent.status != "busy":
        return replace(agent, task_id=None, generation=None, cancelled=cancelled)
    idle_since = at if at is not None else agent.idle_since
    return replace(
        agent,
        status="idle",
        task_id=None,
        generation=None,
        idle_since=idle_since,
        cancelled=cancelled,
    )


# --- decisions -------------------------------------------------------------------------


def _event_fields(agent_id: str, version: int, now: datetime) -> dict[str, Any]:
    return {
        "originator_id": ev.agent_aggregate_id(agent_id),
        "originator_version": version,
        "timestamp": now,
        "agent_id": agent_id,
    }


def register(
    agent: AgentRecord | None, command: cmd.RegisterAgent, now: datetime
) -> ev.AgentRegistered:
    """Register an agent, or re-register one that is idle, offline or gone."""
    if agent is not None and agent.status == "busy":
        raise InvalidTransitionError(
            f"agent {agent.agent_id} holds task {agent.task_id}; it cannot re-register now",
            field="agent_id",
        )
    return ev.AgentRegistered(
        **_event_fields(command.agent_id, agent.version + 1 if agent else 1, now),
        capabilities=tuple(sorted(set(command.capabilities))),
        ollama_host=command.ollama_host,
        token_sha256=command.token_sha256,
    )


def live(agent: AgentRecord | None, agent_id: str) -> AgentRecord:
    """The agent, if it is registered (not deregistered)."""
    if agent is None or agent.status == "deregistered":
        raise NotFoundError(f"no registered agent {agent_id}", field="agent_id")
    return agent


def deregister(agent: AgentRecord, now: datetime) -> ev.AgentDeregistered:
    """The agent leaves the fleet."""
    return ev.AgentDeregistered(**_event_fields(agent.agent_id, agent.version + 1, now))


def go_offline(agent: AgentRecord, reason: str, now: datetime) -> ev.AgentWentOffline:
    """The agent is marked offline (by an operator, or its lease expired)."""
    return ev.AgentWentOffline(
        **_event_fields(agent.agent_id, agent.version + 1, now), reason=reason
    )


def mark_offline(agent: AgentRecord, reason: str, now: datetime) -> ev.AgentWentOffline:
    """An operator marks the agent offline; it must not be offline already."""
    if agent.status == "offline":
        raise InvalidTransitionError(f"agent {agent.agent_id} is already offline", field="agent_id")
    return go_offline(agent, reason, now)


IDLE_TIMEOUT = "idle_timeout"
"""The reason an idle agent that went silent is marked offline (its poll undoes it)."""


def go_silent(agent: AgentRecord, last_seen: datetime, now: datetime) -> ev.AgentWentOffline:
    """An idle agent was not heard from since ``last_seen``: it is offline for now."""
    return ev.AgentWentOffline(
        **_event_fields(agent.agent_id, agent.version + 1, now),
        reason=IDLE_TIMEOUT,
        last_seen_at=last_seen,
    )


def check_in(agent: AgentRecord, now: datetime) -> ev.AgentCameBack | None:
    """The agent was heard from: back if it was offline for silence, else no change
    (an operator's or an expired lease's offline needs a new registration)."""
    if agent.status != "offline" or agent.offline_reason != IDLE_TIMEOUT:
        return None
    return ev.AgentCameBack(
        **_event_fields(agent.agent_id, agent.version + 1, now), reason="polled"
    )


def reserve(agent: AgentRecord, task_id: UUID, generation: int, now: datetime) -> ev.AgentReserved:
    """The agent takes a task (its side of an assignment)."""
    return ev.AgentReserved(
        **_event_fields(agent.agent_id, agent.version + 1, now),
        task_id=task_id,
        generation=generation,
    )
