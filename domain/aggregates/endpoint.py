"""The Endpoint aggregate (an LLM endpoint): its record, its evolve, its decisions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import msgspec
from msgspec.structs import replace

from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.errors import NotFoundError

EndpointStatus = Literal["unknown", "healthy", "unhealthy", "deregistered"]


class EndpointResources(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The latest resource report of an endpoint."""

    cpu_percent: float | None
    ram_used_bytes: int | None
    ram_total_bytes: int | None
    vram_used_bytes: int | None
    vram_total_bytes: int | None
    repo: str | None
    reported_at: datetime


class EndpointRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An LLM endpoint: status, models and latest resources."""

    endpoint_id: str
    version: int
    host: str
    port: int
    models: tuple[str, ...]
    status: EndpointStatus
    consecutive_failures: int = 0
    resources: EndpointResources | None = None
    registration_order: int = 0


# --- evolve ----------------------------------------------------------------------------


def _registered(
    old: EndpointRecord | None, e: ev.EndpointRegistered, position: int
) -> EndpointRecord:
    if old is None:
        return EndpointRecord(
            endpoint_id=e.endpoint_id,
            version=e.originator_version,
            host=e.host,
            port=e.port,
            models=e.models,
            status="unknown",
            registration_order=position,
        )
    return replace(
        old,
        version=e.originator_version,
        host=e.host,
        port=e.port,
        models=e.models,
        status="unknown" if old.status == "deregistered" else old.status,
    )


def _health(old: EndpointRecord, e: ev.EndpointHealthReported, _: int) -> EndpointRecord:
    return replace(
        old,
        version=e.originator_version,
        status=e.status,
        consecutive_failures=e.consecutive_failures,
        models=e.models if e.models is not None else old.models,
    )


def _resources(old: EndpointRecord, e: ev.EndpointResourcesReported, _: int) -> EndpointRecord:
    resources = EndpointResources(
        cpu_percent=e.cpu_percent,
        ram_used_bytes=e.ram_used_bytes,
        ram_total_bytes=e.ram_total_bytes,
        vram_used_bytes=e.vram_used_bytes,
        vram_total_bytes=e.vram_total_bytes,
        repo=e.repo,
        reported_at=e.timestamp,
    )
    return replace(old, version=e.originator_version, resources=resources)


def _deregistered(old: EndpointRecord, e: ev.EndpointDeregistered, _: int) -> EndpointRecord:
    return replace(old, version=e.originator_version, status="deregistered")


EVOLVERS: dict[type[ev.DomainEvent], Callable[[Any, Any, int], EndpointRecord]] = {
    ev.EndpointRegistered: _registered,
    ev.EndpointHealthReported: _health,
    ev.EndpointResourcesReported: _resources,
    ev.EndpointDeregistered: _deregistered,
}
"""Each Endpoint event type's evolve function."""


def evolve(endpoint: EndpointRecord | None, event: ev.DomainEvent, position: int) -> EndpointRecord:
    """The endpoint after ``event`` (recorded at ``position``: its registration order)."""
    return EVOLVERS[type(event)](endpoint, event, position)


# --- decisions -------------------------------------------------------------------------


def _event_fields(endpoint_id: str, version: int, now: datetime) -> dict[str, Any]:
    return {
        "originator_id": ev.endpoint_aggregate_id(endpoint_id),
        "originator_version": version,
        "timestamp": now,
        "endpoint_id": endpoint_id,
    }


def live(endpoint: EndpointRecord | None, endpoint_id: str) -> EndpointRecord:
    """The endpoint, if it is registered (not deregistered)."""
    if endpoint is None or endpoint.status == "deregistered":
        raise NotFoundError(f"no registered endpoint {endpoint_id}", field="endpoint_id")
    return endpoint


def register(
    endpoint: EndpointRecord | None, command: cmd.RegisterEndpoint, now: datetime
) -> ev.EndpointRegistered:
    """Register (or update) an endpoint; its id is ``host:port``."""
    endpoint_id = f"{command.host}:{command.port}"
    return ev.EndpointRegistered(
        **_event_fields(endpoint_id, endpoint.version + 1 if endpoint else 1, now),
        host=command.host,
        port=command.port,
        models=command.models,
    )


def report_health(
    endpoint: EndpointRecord, command: cmd.ReportHealth, now: datetime, failures_to_unhealthy: int
) -> ev.EndpointHealthReported | None:
    """A health check: healthy at once on success, unhealthy after N failures in a row.

    ``None`` when nothing changed: an unchanged healthy report is no fact (SPEC §1.7).
    """
    served = command.models
    if (
        command.ok
        and endpoint.status == "healthy"
        and endpoint.consecutive_failures == 0
        and (served is None or served == endpoint.models)
    ):
        return None
    failures = 0 if command.ok else endpoint.consecutive_failures + 1
    status: Literal["unknown", "healthy", "unhealthy"]
    if command.ok:
        status = "healthy"
    elif failures >= failures_to_unhealthy or endpoint.status == "unhealthy":
        status = "unhealthy"
    else:  # a failure short of the threshold keeps the status it had
        status = "healthy" if endpoint.status == "healthy" else "unknown"
    return ev.EndpointHealthReported(
        **_event_fields(endpoint.endpoint_id, endpoint.version + 1, now),
        ok=command.ok,
        models=served,
        status=status,
        consecutive_failures=failures,
    )


def report_resources(
    endpoint: EndpointRecord, command: cmd.ReportResources, now: datetime
) -> ev.EndpointResourcesReported:
    """The endpoint's resource usage."""
    return ev.EndpointResourcesReported(
        **_event_fields(endpoint.endpoint_id, endpoint.version + 1, now),
        cpu_percent=command.cpu_percent,
        ram_used_bytes=command.ram_used_bytes,
        ram_total_bytes=command.ram_total_bytes,
        vram_used_bytes=command.vram_used_bytes,
        vram_total_bytes=command.vram_total_bytes,
        repo=command.repo,
    )


def deregister(endpoint: EndpointRecord, now: datetime) -> ev.EndpointDeregistered:
    """The endpoint leaves routing."""
    return ev.EndpointDeregistered(**_event_fields(endpoint.endpoint_id, endpoint.version + 1, now))
