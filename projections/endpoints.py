"""The endpoints read model: each LLM endpoint's status, models and resources."""

from __future__ import annotations

from collections.abc import Sequence

from domain import events as ev
from projections.base import ReadModelWriter, iso, to_json

NAME = "endpoints"
TABLES = ("rm_endpoints",)
DDL = (
    "CREATE TABLE IF NOT EXISTS rm_endpoints ("
    " endpoint_id TEXT PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL,"
    " models TEXT NOT NULL, status TEXT NOT NULL, consecutive_failures INTEGER NOT NULL,"
    " resources TEXT, registered_position BIGINT NOT NULL, updated_at TEXT NOT NULL,"
    " position BIGINT NOT NULL)",
)


class EndpointsProjection:
    """Folds endpoint events into ``rm_endpoints``."""

    name = NAME
    tables: Sequence[str] = TABLES
    ddl: Sequence[str] = DDL

    def apply(self, db: ReadModelWriter, position: int, event: ev.DomainEvent) -> None:
        """Fold one event."""
        when = iso(event.timestamp)
        match event:
            case ev.EndpointRegistered():
                db.execute(
                    "INSERT INTO rm_endpoints (endpoint_id, host, port, models, status,"
                    " consecutive_failures, registered_position, updated_at, position)"
                    " VALUES (?, ?, ?, ?, 'unknown', 0, ?, ?, ?)"
                    " ON CONFLICT (endpoint_id) DO UPDATE SET host = excluded.host,"
                    " port = excluded.port, models = excluded.models,"
                    " status = CASE WHEN rm_endpoints.status = 'deregistered' THEN 'unknown'"
                    " ELSE rm_endpoints.status END, updated_at = excluded.updated_at,"
                    " position = excluded.position",
                    (
                        event.endpoint_id,
                        event.host,
                        event.port,
                        to_json(event.models),
                        position,
                        when,
                        position,
                    ),
                )
            case ev.EndpointHealthReported():
                db.execute(
                    "UPDATE rm_endpoints SET status = ?, consecutive_failures = ?,"
                    " models = COALESCE(?, models), updated_at = ?, position = ?"
                    " WHERE endpoint_id = ?",
                    (
                        event.status,
                        event.consecutive_failures,
                        None if event.models is None else to_json(event.models),
                        when,
                        position,
                        event.endpoint_id,
                    ),
                )
            case ev.EndpointResourcesReported():
                resources = {
                    "cpu_percent": event.cpu_percent,
                    "ram_used_bytes": event.ram_used_bytes,
                    "ram_total_bytes": event.ram_total_bytes,
                    "vram_used_bytes": event.vram_used_bytes,
                    "vram_total_bytes": event.vram_total_bytes,
                    "repo": event.repo,
                    "reported_at": when,
                }
                db.execute(
                    "UPDATE rm_endpoints SET resources = ?, updated_at = ?, position = ?"
                    " WHERE endpoint_id = ?",
                    (to_json(resources), when, position, event.endpoint_id),
                )
            case ev.EndpointDeregistered():
                db.execute(
                    "UPDATE rm_endpoints SET status = 'deregistered', updated_at = ?,"
                    " position = ? WHERE endpoint_id = ?",
                    (when, position, event.endpoint_id),
                )
            case _:
                pass
