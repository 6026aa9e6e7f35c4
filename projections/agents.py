"""The agents read model: each live agent's capabilities, status and current task.

An agent's row goes when it deregisters (registering again starts a fresh one); one
that went offline keeps its row, since its next poll brings it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tierlog.domain import events as ev
from tierlog.projections.base import (
    ID,
    JSON,
    STATUS,
    STATUSES,
    TIME,
    Handler,
    Row,
    Rows,
    Table,
    handlers_from,
    id_bytes,
    micros,
    to_json,
)

NAME = "agents"
# 2: a deregistered agent's row is deleted (version 1 kept it, status "deregistered").
# 3: typed columns (issue #16): the task id's bytes, status codes, epoch microseconds.
VERSION = 3
RM_AGENTS = Table(
    "rm_agents",
    (
        ("agent_id", "TEXT NOT NULL"),
        ("status", "INTEGER NOT NULL", STATUS),
        ("capabilities", "TEXT NOT NULL", JSON),
        ("ollama_host", "TEXT"),
        ("task_id", "BYTEA", ID),
        ("generation", "INTEGER"),
        ("registered_at", "BIGINT NOT NULL", TIME),
        ("updated_at", "BIGINT NOT NULL", TIME),
        ("position", "BIGINT NOT NULL"),
    ),
    key=("agent_id",),
)
_at = RM_AGENTS.index
_STATUS = _at("status")
_TASK_ID = _at("task_id")
_GENERATION = _at("generation")
_REGISTERED_AT = _at("registered_at")
_UPDATED_AT = _at("updated_at")
_POSITION = _at("position")
_IDLE, _BUSY, _OFFLINE = (STATUSES.code[s] for s in ("idle", "busy", "offline"))


def _changed(rows: Rows, agent_id: str, position: int, event: ev.DomainEvent) -> Row | None:
    """The agent's row, to change, with the event's time and position already set."""
    row = rows.change(RM_AGENTS, (agent_id,))
    if row is not None:
        row[_UPDATED_AT] = micros(event.timestamp)
        row[_POSITION] = position
    return row


def _registered(rows: Rows, position: int, event: ev.AgentRegistered) -> None:
    when = micros(event.timestamp)
    before = rows.get(RM_AGENTS, (event.agent_id,))
    values: list[Any] = [
        event.agent_id,
        _IDLE,
        to_json(event.capabilities),
        event.ollama_host,
        None,
        None,
        # A re-registration keeps the first registration time.
        when if before is None else before[_REGISTERED_AT],
        when,
        position,
    ]
    rows.put(RM_AGENTS, values)


def _reserved(rows: Rows, position: int, event: ev.AgentReserved) -> None:
    row = _changed(rows, event.agent_id, position, event)
    if row is not None:
        row[_STATUS] = _BUSY
        row[_TASK_ID] = id_bytes(event.task_id)
        row[_GENERATION] = event.generation


def _released(
    rows: Rows,
    position: int,
    event: ev.TaskCompleted | ev.TaskFailed | ev.TaskReclaimed | ev.TaskCancelled,
) -> None:
    if event.agent_id is None:  # a cancelled task no agent held
        return
    row = rows.get(RM_AGENTS, (event.agent_id,))
    if row is None or row[_TASK_ID] != id_bytes(event.originator_id):
        return
    row = _changed(rows, event.agent_id, position, event)
    if row is not None:
        if row[_STATUS] == _BUSY:
            row[_STATUS] = _IDLE
        row[_TASK_ID] = row[_GENERATION] = None


def _went_offline(rows: Rows, position: int, event: ev.AgentWentOffline) -> None:
    row = _changed(rows, event.agent_id, position, event)
    if row is not None:
        row[_STATUS] = _OFFLINE


def _came_back(rows: Rows, position: int, event: ev.AgentCameBack) -> None:
    row = _changed(rows, event.agent_id, position, event)
    if row is not None:
        row[_STATUS] = _IDLE


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
