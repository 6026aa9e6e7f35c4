"""The agents read model: each agent's capabilities, status and current task."""

from __future__ import annotations

from collections.abc import Sequence

from domain import events as ev
from projections.base import ReadModelWriter, iso, to_json

NAME = "agents"
TABLES = ("rm_agents",)
DDL = (
    "CREATE TABLE IF NOT EXISTS rm_agents ("
    " agent_id TEXT PRIMARY KEY, status TEXT NOT NULL, capabilities TEXT NOT NULL,"
    " ollama_host TEXT, task_id TEXT, generation INTEGER, registered_at TEXT NOT NULL,"
    " updated_at TEXT NOT NULL, position BIGINT NOT NULL)",
)


class AgentsProjection:
    """Folds agent events (and the task events that free an agent) into ``rm_agents``."""

    name = NAME
    tables: Sequence[str] = TABLES
    ddl: Sequence[str] = DDL

    def apply(self, db: ReadModelWriter, position: int, event: ev.DomainEvent) -> None:
        """Fold one event."""
        when = iso(event.timestamp)
        match event:
            case ev.AgentRegistered():
                db.execute(
                    "INSERT INTO rm_agents (agent_id, status, capabilities, ollama_host,"
                    " registered_at, updated_at, position) VALUES (?, 'idle', ?, ?, ?, ?, ?)"
                    " ON CONFLICT (agent_id) DO UPDATE SET status = 'idle',"
                    " capabilities = excluded.capabilities, ollama_host = excluded.ollama_host,"
                    " task_id = NULL, generation = NULL, updated_at = excluded.updated_at,"
                    " position = excluded.position",
                    (
                        event.agent_id,
                        to_json(event.capabilities),
                        event.ollama_host,
                        when,
                        when,
                        position,
                    ),
                )
            case ev.AgentReserved():
                db.execute(
                    "UPDATE rm_agents SET status = 'busy', task_id = ?, generation = ?,"
                    " updated_at = ?, position = ? WHERE agent_id = ?",
                    (str(event.task_id), event.generation, when, position, event.agent_id),
                )
            case ev.TaskCompleted() | ev.TaskFailed() | ev.TaskReclaimed():
                db.execute(
                    "UPDATE rm_agents SET status = CASE WHEN status = 'busy' THEN 'idle'"
                    " ELSE status END, task_id = NULL, generation = NULL, updated_at = ?,"
                    " position = ? WHERE agent_id = ? AND task_id = ?",
                    (when, position, event.agent_id, str(event.originator_id)),
                )
            case ev.AgentWentOffline() | ev.AgentDeregistered():
                status = "offline" if isinstance(event, ev.AgentWentOffline) else "deregistered"
                db.execute(
                    "UPDATE rm_agents SET status = ?, updated_at = ?, position = ?"
                    " WHERE agent_id = ?",
                    (status, when, position, event.agent_id),
                )
            case _:
                pass
