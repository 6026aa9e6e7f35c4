"""The endpoints read model: each LLM endpoint's status, models and resources."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tierlog.domain import events as ev
from tierlog.projections.base import Handler, Rows, Table, handlers_from, iso, to_json

NAME = "endpoints"
RM_ENDPOINTS = Table(
    "rm_endpoints",
    (
        ("endpoint_id", "TEXT NOT NULL"),
        ("host", "TEXT NOT NULL"),
        ("port", "INTEGER NOT NULL"),
        ("models", "TEXT NOT NULL"),
        ("status", "TEXT NOT NULL"),
        ("consecutive_failures", "INTEGER NOT NULL"),
        ("resources", "TEXT"),
        ("registered_position", "BIGINT NOT NULL"),
        ("updated_at", "TEXT NOT NULL"),
        ("position", "BIGINT NOT NULL"),
    ),
    key=("endpoint_id",),
)


def _registered(rows: Rows, position: int, event: ev.EndpointRegistered) -> None:
    when = iso(event.timestamp)
    key = (event.endpoint_id,)
    changes = {
        "host": event.host,
        "port": event.port,
        "models": to_json(event.models),
        "updated_at": when,
        "position": position,
    }
    before = rows.get(RM_ENDPOINTS, key)
    if before is None:
        rows.put(
            RM_ENDPOINTS,
            {
                "endpoint_id": event.endpoint_id,
                **changes,
                "status": "unknown",
                "consecutive_failures": 0,
                "resources": None,
                "registered_position": position,
            },
        )
        return
    # Registering again keeps the health history, except that it brings a
    # deregistered endpoint back as unknown.
    if before["status"] == "deregistered":
        changes["status"] = "unknown"
    rows.update(RM_ENDPOINTS, key, changes)


def _health(rows: Rows, position: int, event: ev.EndpointHealthReported) -> None:
    changes: dict[str, Any] = {
        "status": event.status,
        "consecutive_failures": event.consecutive_failures,
        "updated_at": iso(event.timestamp),
        "position": position,
    }
    if event.models is not None:
        changes["models"] = to_json(event.models)
    rows.update(RM_ENDPOINTS, (event.endpoint_id,), changes)


def _resources(rows: Rows, position: int, event: ev.EndpointResourcesReported) -> None:
    when = iso(event.timestamp)
    resources = {
        "cpu_percent": event.cpu_percent,
        "ram_used_bytes": event.ram_used_bytes,
        "ram_total_bytes": event.ram_total_bytes,
        "vram_used_bytes": event.vram_used_bytes,
        "vram_total_bytes": event.vram_total_bytes,
        "repo": event.repo,
        "reported_at": when,
    }
    rows.update(
        RM_ENDPOINTS,
        (event.endpoint_id,),
        {"resources": to_json(resources), "updated_at": when, "position": position},
    )


def _deregistered(rows: Rows, position: int, event: ev.EndpointDeregistered) -> None:
    rows.update(
        RM_ENDPOINTS,
        (event.endpoint_id,),
        {"status": "deregistered", "updated_at": iso(event.timestamp), "position": position},
    )


_HANDLERS: dict[type, Handler] = {
    ev.EndpointRegistered: _registered,
    ev.EndpointHealthReported: _health,
    ev.EndpointResourcesReported: _resources,
    ev.EndpointDeregistered: _deregistered,
}


class EndpointsProjection:
    """Folds endpoint events into ``rm_endpoints``."""

    name = NAME
    tables: Sequence[Table] = (RM_ENDPOINTS,)

    def handlers_for(self, event_type: type) -> Sequence[Handler]:
        """The handler of ``event_type``, if this read model folds it."""
        return handlers_from(_HANDLERS, event_type)
