"""The agents read model: each live agent's capabilities, status and current task.

An agent's row goes when it deregisters (registering again starts a fresh one); one
that went offline keeps its row, since its next poll brings it back.
"""

from __future__ import annotations

from collections.abc import Sequence

from tierlog.domain import events as ev
from tierlog.projections.base import Handler, Rows, Table, handlers_from, iso, text_id, to_json

NAME = "agents"
# 2: a deregistered agent's row is deleted (version 1 kept it, status "deregistered").
VERSION = 2
RM_AGENTS = Table(
    "rm_agents",
    (
        ("agent_id", "TEXT NOT NULL"),
        ("status", "TEXT NOT NULL"),
        ("capabilities", "TEXT NOT NULL"),
        ("ollama_host", "TEXT"),
        ("task_id", "TEXT"),
        ("generation", "INTEGER"),
        ("registered_at", "TEXT NOT NULL"),
        ("updated_at", "TEXT NOT NULL"),
        ("position", "BIGINT NOT NULL"),
    ),
    key=("agent_id",),
)


def _registered(rows: Rows, position: int, event: ev.AgentRegistered) -> None:
    when = iso(event.timestamp)
    before = rows.get(RM_AGENTS, (event.agent_id,))
    rows.put(
        RM_AGENTS,
        {
            "agent_id": event.agent_id,
            "status": "idle",
            "capabilities": to_json(event.capabilities),
            "ollama_host": event.ollama_host,
            "task_id": None,
            "generation": None,
            # A re-registration keeps the first registration time.
            "registered_at": when if before is None else before["registered_at"],
            "updated_at": when,
            "position": position,
        },
    )


def _reserved(rows: Rows, position: int, event: ev.AgentReserved) -> None:
    rows.update(
        RM_AGENTS,
        (event.agent_id,),
        {
            "status": "busy",
            "task_id": text_id(event.task_id),
            "generation": event.generation,
            "updated_at": iso(event.timestamp),
            "position": position,
        },
    )


def _released(
    rows: Rows,
    position: int,
    event: ev.TaskCompleted | ev.TaskFailed | ev.TaskReclaimed | ev.TaskCancelled,
) -> None:
    if event.agent_id is None:  # a cancelled task no agent held
        return
    row = rows.get(RM_AGENTS, (event.agent_id,))
    if row is None or row["task_id"] != text_id(event.originator_id):
        return
    rows.update(
        RM_AGENTS,
        (event.agent_id,),
        {
            "status": "idle" if row["status"] == "busy" else row["status"],
            "task_id": None,
            "generation": None,
            "updated_at": iso(event.timestamp),
            "position": position,
        },
    )


def _went_offline(rows: Rows, position: int, event: ev.AgentWentOffline) -> None:
    rows.update(
        RM_AGENTS,
        (event.agent_id,),
        {"status": "offline", "updated_at": iso(event.timestamp), "position": position},
    )


def _came_back(rows: Rows, position: int, event: ev.AgentCameBack) -> None:
    rows.update(
        RM_AGENTS,
        (event.agent_id,),
        {"status": "idle", "updated_at": iso(event.timestamp), "position": position},
    )


def _deregistered(rows: Rows, position: int, event: ev.AgentDeregistered) -> None:
    rows.delete(RM_AGENTS, (event.agent_id,))


_HANDLERS: dict[type, Handler] = {
    ev.AgentRegistered: _registered,
    ev.AgentReserved: _reserved,
    ev.TaskCompleted: _released,
    ev.TaskFailed: _released,
    ev.TaskReclaimed: _released,
    ev.TaskCancelled: _released,
    ev.AgentWentOffline: _went_offline,
    ev.AgentCameBack: _came_back,
    ev.AgentDeregistered: _deregistered,
}


class AgentsProjection:
    """Folds agent events (and the task events that free an agent) into ``rm_agents``."""

    name = NAME
    version = VERSION
    tables: Sequence[Table] = (RM_AGENTS,)

    def handlers_for(self, event_type: type) -> Sequence[Handler]:
        """The handler of ``event_type``, if this read model folds it."""
        return handlers_from(_HANDLERS, event_type)
