"""The endpoints read model: each LLM endpoint's status, models and resources."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tierlog.domain import events as ev
from tierlog.projections.base import (
    JSON,
    STATUS,
    STATUSES,
    TIME,
    Handler,
    Row,
    Rows,
    Table,
    handlers_from,
    iso,
    micros,
    to_json,
)

NAME = "endpoints"
# 2: typed columns (issue #16): status codes, epoch microseconds.
VERSION = 2
RM_ENDPOINTS = Table(
    "rm_endpoints",
    (
        ("endpoint_id", "TEXT NOT NULL"),
        ("host", "TEXT NOT NULL"),
        ("port", "INTEGER NOT NULL"),
        ("models", "TEXT NOT NULL", JSON),
        ("status", "INTEGER NOT NULL", STATUS),
        ("consecutive_failures", "INTEGER NOT NULL"),
        ("resources", "TEXT", JSON),
        ("registered_position", "BIGINT NOT NULL"),
        ("updated_at", "BIGINT NOT NULL", TIME),
        ("position", "BIGINT NOT NULL"),
    ),
    key=("endpoint_id",),
)
_at = RM_ENDPOINTS.index
_HOST = _at("host")
_PORT = _at("port")
_MODELS = _at("models")
_STATUS = _at("status")
_CONSECUTIVE_FAILURES = _at("consecutive_failures")
_RESOURCES = _at("resources")
_UPDATED_AT = _at("updated_at")
_POSITION = _at("position")
_UNKNOWN, _DEREGISTERED = STATUSES.code["unknown"], STATUSES.code["deregistered"]


def _changed(rows: Rows, endpoint_id: str, position: int, event: ev.DomainEvent) -> Row | None:
    """The endpoint's row, to change, with the event's time and position already set."""
    row = rows.change(RM_ENDPOINTS, (endpoint_id,))
    if row is not None:
        row[_UPDATED_AT] = micros(event.timestamp)
        row[_POSITION] = position
    return row


def _registered(rows: Rows, position: int, event: ev.EndpointRegistered) -> None:
    if rows.get(RM_ENDPOINTS, (event.endpoint_id,)) is None:
        values: list[Any] = [
            event.endpoint_id,
            event.host,
            event.port,
            to_json(event.models),
            _UNKNOWN,
            0,
            None,
            position,
            micros(event.timestamp),
            position,
        ]
        rows.put(RM_ENDPOINTS, values)
        return
    row = _changed(rows, event.endpoint_id, position, event)
    if row is not None:
        row[_HOST] = event.host
        row[_PORT] = event.port
        row[_MODELS] = to_json(event.models)
        # Registering again keeps the health history, except that it brings a
        # deregistered endpoint back as unknown.
        if row[_STATUS] == _DEREGISTERED:
            row[_STATUS] = _UNKNOWN


def _health(rows: Rows, position: int, event: ev.EndpointHealthReported) -> None:
    row = _changed(rows, event.endpoint_id, position, event)
    if row is not None:
        row[_STATUS] = STATUSES.code[event.status]
        row[_CONSECUTIVE_FAILURES] = event.consecutive_failures
        if event.models is not None:
            row[_MODELS] = to_json(event.models)


def _resources(rows: Rows, position: int, event: ev.EndpointResourcesReported) -> None:
    resources = {
        "cpu_percent": event.cpu_percent,
        "ram_used_bytes": event.ram_used_bytes,
        "ram_total_bytes": event.ram_total_bytes,
        "vram_used_bytes": event.vram_used_bytes,
        "vram_total_bytes": event.vram_total_bytes,
        "repo": event.repo,
        "reported_at": iso(event.timestamp),
    }
    row = _changed(rows, event.endpoint_id, position, event)
    if row is not None:
        row[_RESOURCES] = to_json(resources)


def _deregistered(rows: Rows, position: int, event: ev.EndpointDeregistered) -> None:
    row = _changed(rows, event.endpoint_id, position, event)
    if row is not None:
        row[_STATUS] = _DEREGISTERED


_HANDLERS: dict[type, Handler] = {
    ev.EndpointRegistered: _registered,
    ev.EndpointHealthReported: _health,
    ev.EndpointResourcesReported: _resources,
    ev.EndpointDeregistered: _deregistered,
}


class EndpointsProjection:
    """Folds endpoint events into ``rm_endpoints``."""

    name = NAME
    version = VERSION
    tables: Sequence[Table] = (RM_ENDPOINTS,)

    def handlers_for(self, event_type: type) -> Sequence[Handler]:
        """The handler of ``event_type``, if this read model folds it."""
        return handlers_from(_HANDLERS, event_type)
