"""Current state of each aggregate: immutable records that events evolve.

Each record carries its aggregate's ``version`` (the version of the last event
applied), which is what optimistic concurrency checks against.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

import msgspec

from tierlog.domain.config import TierName
from tierlog.domain.events import Priority, RoutingDecision

TaskStateName = Literal["queued", "assigned", "completed", "dead_lettered", "cancelled"]
PRIORITY_RANK: dict[str, int] = {"urgent": 0, "high": 1, "normal": 2, "low": 3}


def host_of(address: str | None) -> str | None:
    """The host part of an Ollama address: ``http://gpu-a:11434/`` → ``gpu-a``."""
    if not address:
        return None
    host = address.split("://", 1)[-1].split("/", 1)[0]
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class TaskRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A task as the scheduler needs it."""

    task_id: UUID
    version: int
    position: int
    priority: Priority
    needed_capabilities: tuple[str, ...]
    repo: str | None
    route_tier: TierName
    classification_reason: str
    state: TaskStateName
    generation: int
    retry_count: int
    max_retries: int
    submitted_at: datetime
    queued_at: datetime
    complete_by: datetime | None
    assigned_to: str | None = None
    lease_expires_at: datetime | None = None
    escalated_to: TierName | None = None
    fallback_reason: str | None = None
    routing_decision: RoutingDecision | None = None
    routed_generation: int | None = None
    dead_letter_reason: str | None = None

    @property
    def queue_key(self) -> tuple[int, int]:
        """Queue order: priority, then submission order."""
        return (PRIORITY_RANK[self.priority], self.position)

    @property
    def effective_tier(self) -> TierName:
        """The tier the task routes at now: its own, or its fallback once escalated."""
        return self.escalated_to or self.route_tier


class AgentRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An agent: what it can do, where its Ollama is, and what it holds."""

    agent_id: str
    version: int
    capabilities: frozenset[str]
    ollama_host: str | None
    status: Literal["idle", "busy", "offline", "deregistered"]
    task_id: UUID | None = None
    generation: int | None = None
    token_sha256: str | None = None


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
    status: Literal["unknown", "healthy", "unhealthy", "deregistered"]
    consecutive_failures: int = 0
    resources: EndpointResources | None = None
    registration_order: int = 0


class PendingTimer(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A fallback timer that has started and neither fired nor been cancelled."""

    task_id: UUID
    original_tier: TierName
    fallback_tier: TierName
    started_at: datetime
    fires_at: datetime
    reason: str
