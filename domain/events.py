"""Past-tense facts: every change to a task, agent, endpoint or the scheduler.

Events are immutable msgspec structs. Each names its aggregate (``originator_id``)
and its place in that aggregate's sequence (``originator_version``); the store gives
it a global position. Timestamps come from the injected clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from typing import Any, ClassVar, Literal
from uuid import UUID, uuid5

import msgspec

from tierlog.domain.config import SchedulerConfig, TargetType, TierName

Priority = Literal["urgent", "high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("urgent", "high", "normal", "low")
RequestedTier = Literal["trivial", "standard", "complex", "unknown"]

NAMESPACE = UUID("6f1d2c52-8d0b-4d7e-9a57-2f1e0c3b7a10")
SCHEDULER_ID = uuid5(NAMESPACE, "scheduler")


@lru_cache(maxsize=65536)
def agent_aggregate_id(agent_id: str) -> UUID:
    """The aggregate id of an agent, derived from its name so every process agrees."""
    return uuid5(NAMESPACE, "agent:" + agent_id)


@lru_cache(maxsize=4096)
def endpoint_aggregate_id(endpoint_id: str) -> UUID:
    """The aggregate id of an LLM endpoint, derived from ``host:port``."""
    return uuid5(NAMESPACE, "endpoint:" + endpoint_id)


def idempotent_task_id(key: str) -> UUID:
    """The task id for an idempotency key: two processes with one key write one task."""
    return uuid5(NAMESPACE, "task-idempotency:" + key)


# A stored name is a plain word: the codec appends "@N" for class versions, and the
# legacy topics it still reads contain ":".
_STORED_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class DomainEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Base of every event.

    Each event type declares its own ``stored_name``: the name the log stores it under,
    whatever the class or its module is called (logs hold it, so it never changes).
    ``class_version`` goes up when a payload changes shape.
    """

    stored_name: ClassVar[str]
    class_version: ClassVar[int] = 1
    originator_id: UUID
    originator_version: int
    timestamp: datetime

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Declared on the class itself: a subclass must not inherit its parent's name.
        name = cls.__dict__.get("stored_name")
        if not isinstance(name, str) or not _STORED_NAME.fullmatch(name):
            raise TypeError(
                f"event type {cls.__qualname__} must declare its own stored_name "
                f"(a word of letters, digits and _), not {name!r}"
            )


def check_stored_names(event_types: Iterable[type[DomainEvent]]) -> None:
    """Raise ``TypeError`` if two of ``event_types`` share a stored name."""
    seen: dict[str, type[DomainEvent]] = {}
    for event_type in event_types:
        first = seen.setdefault(event_type.stored_name, event_type)
        if first is not event_type:
            raise TypeError(
                f"event types {first.__qualname__} and {event_type.__qualname__} "
                f"are both stored as {event_type.stored_name!r}"
            )


# --- value objects carried by events -------------------------------------------------


class ClassificationSignals(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The four heuristic signals SPEC §1.2 reads."""

    word_count: int
    file_count: int
    verification_count: int
    complex_keywords: tuple[str, ...] = ()
    trivial_keywords: tuple[str, ...] = ()


def require_finite(value: object, *names: str) -> None:
    """Raise ``ValueError`` unless each named float field of ``value`` is finite.

    A value object whose floats the domain computes checks them where it is built (and
    decoded): NaN and infinity would be written as null and make the log undecodable.
    Such a class says so with ``finite_floats = True``, and the codec then need not
    decode its events back before the append to prove it.
    """
    for name in names:
        number = getattr(value, name)
        if number is not None and not math.isfinite(number):
            raise ValueError(f"{type(value).__name__}.{name} must be finite, not {number}")


class Classification(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A classification result: the tier, where it came from and why."""

    finite_floats: ClassVar[bool] = True
    tier: RequestedTier
    source: Literal["explicit", "inferred"]
    confidence: float
    signals: ClassificationSignals
    heuristic_tier: RequestedTier
    heuristic_confidence: float

    def __post_init__(self) -> None:
        # A finite number times zero is zero; NaN or infinity makes the sum NaN. One
        # expression on this hot path (every submission, every decode), and the
        # per-field check only to name the culprit.
        if self.confidence * 0.0 + self.heuristic_confidence * 0.0 != 0.0:
            require_finite(self, "confidence", "heuristic_confidence")


class CandidateScore(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One endpoint considered for an ``ollama`` route, with each score factor."""

    finite_floats: ClassVar[bool] = True
    endpoint_id: str
    score: float
    load: float
    capacity: float
    vram: float
    warm: float
    affinity: float

    def __post_init__(self) -> None:
        # As in ``Classification``: zero unless a factor is NaN or infinite.
        zero = (
            self.score * 0.0
            + self.load * 0.0
            + self.capacity * 0.0
            + self.vram * 0.0
            + self.warm * 0.0
            + self.affinity * 0.0
        )
        if zero != 0.0:
            require_finite(self, "score", "load", "capacity", "vram", "warm", "affinity")


class RoutingDecision(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Where a task goes and why (SPEC §1.3), with the inputs needed to recompute it."""

    effective_tier: TierName
    target_type: TargetType
    selected_endpoint: str | None
    selected_model: str | None
    fallback_used: bool
    fallback_from_tier: TierName | None
    fallback_reason: str | None
    candidate_count: int
    candidates: tuple[CandidateScore, ...]
    classification_reason: str
    estimated_cost_tier: str
    decided_at: datetime
    scoring_duration_us: int
    endpoint_state_position: int
    # The log position of the SchedulerConfigured event whose configuration was used
    # (0: the built-in defaults). With endpoint_state_position, enough to recompute it.
    config_position: int = 0


# --- Task aggregate ------------------------------------------------------------------


class TaskSubmitted(DomainEvent, frozen=True, kw_only=True):
    """An operator submitted a task; it starts queued at generation 0."""

    stored_name: ClassVar[str] = "TaskSubmitted"

    description: str
    priority: Priority
    needed_capabilities: tuple[str, ...]
    requested_tier: RequestedTier | None
    file_hints: tuple[str, ...]
    verification_steps: tuple[str, ...]
    success_criteria: tuple[str, ...]
    repo: str | None
    branch: str | None
    metadata: dict[str, Any]
    max_retries: int
    complete_by: datetime | None
    submitted_by: str
    idempotency_key: str | None
    # Per-task retry backoff (None: the scheduler's ``retry_backoff_s`` and
    # ``retry_backoff_max_s``).
    retry_backoff_s: float | None = None
    retry_backoff_max_s: float | None = None


class TaskClassified(DomainEvent, frozen=True, kw_only=True):
    """The task's tier was settled (explicit or inferred) and the heuristic recorded."""

    stored_name: ClassVar[str] = "TaskClassified"

    classification: Classification
    route_tier: TierName
    reason: str


class TaskRouted(DomainEvent, frozen=True, kw_only=True):
    """A routing decision was made, for an assignment or a fallback."""

    stored_name: ClassVar[str] = "TaskRouted"

    generation: int
    decision: RoutingDecision
    # Why a decision was made outside the usual paths (``tier_recovered``: an escalated
    # task routed at its own tier again); None for an assignment's or a fallback's.
    reason: str | None = None


class TaskAssigned(DomainEvent, frozen=True, kw_only=True):
    """The task went to an agent under a new generation and lease."""

    stored_name: ClassVar[str] = "TaskAssigned"

    agent_id: str
    generation: int
    decision: RoutingDecision
    lease_expires_at: datetime


class TaskHeartbeated(DomainEvent, frozen=True, kw_only=True):
    """The assigned agent is alive; its lease was extended."""

    stored_name: ClassVar[str] = "TaskHeartbeated"

    agent_id: str
    generation: int
    lease_expires_at: datetime


class TaskCompleted(DomainEvent, frozen=True, kw_only=True):
    """The assigned agent finished the task."""

    stored_name: ClassVar[str] = "TaskCompleted"

    agent_id: str
    generation: int
    result: Any


class TaskFailed(DomainEvent, frozen=True, kw_only=True):
    """The assigned agent reported a failure; ``retry_count`` counts failures so far."""

    stored_name: ClassVar[str] = "TaskFailed"

    agent_id: str
    generation: int
    error: str
    retry_count: int


class TaskReclaimed(DomainEvent, frozen=True, kw_only=True):
    """The task was taken back from its agent (lease_expired, agent_gone, overdue).

    After ``lease_expired`` or ``agent_gone`` the task is requeued; after ``overdue``
    its deadline has passed, so it is dead-lettered rather than handed out again.
    """

    stored_name: ClassVar[str] = "TaskReclaimed"

    agent_id: str
    reason: str
    previous_generation: int


class TaskEscalated(DomainEvent, frozen=True, kw_only=True):
    """The task's fallback timer fired: from now on it routes at ``to_tier``."""

    stored_name: ClassVar[str] = "TaskEscalated"

    from_tier: TierName
    to_tier: TierName
    reason: str


class TaskRequeued(DomainEvent, frozen=True, kw_only=True):
    """The task went back to the queue under a new generation."""

    stored_name: ClassVar[str] = "TaskRequeued"

    generation: int
    reason: str
    # After a failure: no assignment before this time (retry backoff, recorded so a
    # replay or a restart honours it without drawing the jitter again).
    not_before: datetime | None = None


class TaskDeadLettered(DomainEvent, frozen=True, kw_only=True):
    """The task will not run again unless retried by hand."""

    stored_name: ClassVar[str] = "TaskDeadLettered"

    reason: str


class TaskRetried(DomainEvent, frozen=True, kw_only=True):
    """An operator put a dead-lettered task back in the queue; retries reset to 0.

    ``complete_by`` is the deadline from now on: the old one while it is still ahead,
    else none (retrying an overdue task by hand means "do it anyway").
    """

    stored_name: ClassVar[str] = "TaskRetried"

    generation: int
    requested_by: str
    complete_by: datetime | None


class TaskCancelled(DomainEvent, frozen=True, kw_only=True, omit_defaults=True):
    """An operator cancelled a task: queued, dead-lettered, or running.

    A running (assigned) task names the agent that held it and the generation it held
    it at: that agent is free again, and it is told (409 ``cancelled``) when it next
    heartbeats, completes, fails or polls. Both are None for a task no agent held, and
    then left out of the payload, which is stored exactly as before they existed.
    """

    stored_name: ClassVar[str] = "TaskCancelled"

    reason: str
    requested_by: str
    agent_id: str | None = None
    generation: int | None = None


class TaskDeescalated(DomainEvent, frozen=True, kw_only=True):
    """An escalated task whose fallback tier cannot route it goes back to its own tier,
    which can route it again (issue #13: escalation follows recovery)."""

    stored_name: ClassVar[str] = "TaskDeescalated"

    from_tier: TierName
    to_tier: TierName
    reason: str


# --- Scheduler aggregate (owns the fallback timers) ----------------------------------


class FallbackTimerStarted(DomainEvent, frozen=True, kw_only=True):
    """A task's tier had no candidate: escalate one tier up if none appears in time."""

    stored_name: ClassVar[str] = "FallbackTimerStarted"

    task_id: UUID
    original_tier: TierName
    fallback_tier: TierName
    fires_at: datetime
    reason: str


class FallbackTimerFired(DomainEvent, frozen=True, kw_only=True):
    """The wait passed with the task still queued: it now routes at the fallback tier."""

    stored_name: ClassVar[str] = "FallbackTimerFired"

    task_id: UUID
    original_tier: TierName
    fallback_tier: TierName
    reason: str
    wait_ms: int


class FallbackTimerCancelled(DomainEvent, frozen=True, kw_only=True):
    """The timer ended without firing (assigned, tier_recovered, cancelled, dead_lettered)."""

    stored_name: ClassVar[str] = "FallbackTimerCancelled"

    task_id: UUID
    reason: str


class SchedulerConfigured(DomainEvent, frozen=True, kw_only=True):
    """A scheduler started with this configuration (recorded when it differs from the
    last one recorded), so replays and audits know the policy behind each decision."""

    stored_name: ClassVar[str] = "SchedulerConfigured"

    config: SchedulerConfig


class SchedulerLeaderElected(DomainEvent, frozen=True, kw_only=True):
    """A node became the one scheduler that decides and appends, under a fencing
    ``epoch`` (PostgreSQL, several nodes): every later decision until the next election
    was made by ``node_id``. The store refuses appends from any older epoch."""

    stored_name: ClassVar[str] = "SchedulerLeaderElected"

    node_id: str
    epoch: int


# --- Agent aggregate -----------------------------------------------------------------


class AgentRegistered(DomainEvent, frozen=True, kw_only=True):
    """An agent joined (or re-joined) the fleet and is idle."""

    stored_name: ClassVar[str] = "AgentRegistered"

    agent_id: str
    capabilities: tuple[str, ...]
    ollama_host: str | None
    # SHA-256 of the agent's bearer token (the token itself is never stored).
    token_sha256: str | None = None


class AgentReserved(DomainEvent, frozen=True, kw_only=True):
    """The agent took a task: it holds it until the task leaves that generation."""

    stored_name: ClassVar[str] = "AgentReserved"

    agent_id: str
    task_id: UUID
    generation: int


class AgentWentOffline(DomainEvent, frozen=True, kw_only=True):
    """The agent stopped answering (its lease expired, or an operator said so)."""

    stored_name: ClassVar[str] = "AgentWentOffline"

    agent_id: str
    reason: str
    # ``idle_timeout``: when the agent was last seen (polled, heartbeated or freed).
    last_seen_at: datetime | None = None


class AgentCameBack(DomainEvent, frozen=True, kw_only=True):
    """An agent marked offline for silence polled again: it is idle once more."""

    stored_name: ClassVar[str] = "AgentCameBack"

    agent_id: str
    reason: str


class AgentDeregistered(DomainEvent, frozen=True, kw_only=True):
    """The agent left the fleet."""

    stored_name: ClassVar[str] = "AgentDeregistered"

    agent_id: str


# --- Endpoint aggregate --------------------------------------------------------------


class EndpointRegistered(DomainEvent, frozen=True, kw_only=True):
    """An LLM endpoint was registered or re-registered with its models."""

    stored_name: ClassVar[str] = "EndpointRegistered"

    endpoint_id: str
    host: str
    port: int
    models: tuple[str, ...]


class EndpointHealthReported(DomainEvent, frozen=True, kw_only=True):
    """A health check result, with the status it leads to."""

    stored_name: ClassVar[str] = "EndpointHealthReported"

    endpoint_id: str
    ok: bool
    models: tuple[str, ...] | None
    status: Literal["unknown", "healthy", "unhealthy"]
    consecutive_failures: int


class EndpointResourcesReported(DomainEvent, frozen=True, kw_only=True):
    """The endpoint's resource usage; fields are None when not reported."""

    stored_name: ClassVar[str] = "EndpointResourcesReported"
    finite_floats: ClassVar[bool] = True

    endpoint_id: str
    cpu_percent: float | None
    ram_used_bytes: int | None
    ram_total_bytes: int | None
    vram_used_bytes: int | None
    vram_total_bytes: int | None
    repo: str | None

    def __post_init__(self) -> None:
        require_finite(self, "cpu_percent")


class EndpointDeregistered(DomainEvent, frozen=True, kw_only=True):
    """The endpoint was removed."""

    stored_name: ClassVar[str] = "EndpointDeregistered"

    endpoint_id: str


EVENT_TYPES: tuple[type[DomainEvent], ...] = (
    TaskSubmitted,
    TaskClassified,
    TaskRouted,
    TaskAssigned,
    TaskHeartbeated,
    TaskCompleted,
    TaskFailed,
    TaskReclaimed,
    TaskEscalated,
    TaskRequeued,
    TaskDeadLettered,
    TaskRetried,
    TaskCancelled,
    TaskDeescalated,
    FallbackTimerStarted,
    FallbackTimerFired,
    FallbackTimerCancelled,
    SchedulerConfigured,
    SchedulerLeaderElected,
    AgentRegistered,
    AgentReserved,
    AgentWentOffline,
    AgentCameBack,
    AgentDeregistered,
    EndpointRegistered,
    EndpointHealthReported,
    EndpointResourcesReported,
    EndpointDeregistered,
)


def _check_all_listed() -> None:
    # The codec stores only the listed types: one left out could never be appended.
    unlisted = set(DomainEvent.__subclasses__()).difference(EVENT_TYPES)
    if unlisted:
        names = sorted(t.__qualname__ for t in unlisted)
        raise TypeError(f"event types missing from EVENT_TYPES: {names}")


check_stored_names(EVENT_TYPES)
_check_all_listed()
