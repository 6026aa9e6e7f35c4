"""Routing: which target and endpoint serve a task's tier, scored per SPEC §1.3."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from tierlog.domain.aggregates.endpoint import EndpointRecord
from tierlog.domain.config import SchedulerConfig, TierName
from tierlog.domain.events import CandidateScore, RoutingDecision

GIB = 1024**3


class RoutingInputs(Protocol):
    """What a routing decision reads from a task: ``TaskRecord`` has it, and so does the
    audit's lean per-task record (which keeps only this)."""

    @property
    def repo(self) -> str | None:
        """The task's repository (for endpoint affinity)."""
        ...

    @property
    def route_tier(self) -> TierName:
        """The tier the task was classified into."""
        ...

    @property
    def classification_reason(self) -> str:
        """Why it was classified so, copied into the decision."""
        ...

    @property
    def escalated_to(self) -> TierName | None:
        """The fallback tier once its timer fired, else None."""
        ...

    @property
    def fallback_reason(self) -> str | None:
        """Why it was escalated, once it was."""
        ...

    @property
    def effective_tier(self) -> TierName:
        """The tier it routes at now."""
        ...


def fallback_reason_for(target: str) -> str:
    """Why a target had no candidate, as recorded on timers and fallback decisions."""
    if target == "ollama":
        return "no_healthy_ollama_endpoints"
    if target == "claude":
        return "claude_disabled"
    return f"no_{target}_candidates"


def ollama_candidates(endpoints: Iterable[EndpointRecord]) -> list[EndpointRecord]:
    """Endpoints that may serve an ``ollama`` route: healthy and with a model."""
    return [e for e in endpoints if e.status == "healthy" and e.models]


def has_candidate(
    tier: TierName, config: SchedulerConfig, endpoints: Iterable[EndpointRecord]
) -> bool:
    """Whether ``tier`` can be routed at all right now."""
    target = config.rule_for(tier).target
    if target == "sidecar":
        return True
    if target == "claude":
        return config.claude_enabled
    return any(e.status == "healthy" and e.models for e in endpoints)


def score_endpoint(
    endpoint: EndpointRecord, task_repo: str | None, config: SchedulerConfig, now: datetime
) -> CandidateScore:
    """Score one endpoint: load × capacity × vram × warm × affinity."""
    resources = endpoint.resources
    if resources is not None and (now - resources.reported_at).total_seconds() > (
        config.resource_stale_s
    ):
        resources = None
    cpu = resources.cpu_percent if resources and resources.cpu_percent is not None else 50.0
    load = 1.0 - cpu / 100.0
    ram_total = resources.ram_total_bytes if resources else None
    capacity = min(ram_total / (16 * GIB), 1.5) if ram_total else 1.0
    vram_total = resources.vram_total_bytes if resources else None
    vram_used = resources.vram_used_bytes if resources else None
    if vram_total and vram_used is not None:
        vram = 0.8 + 0.2 * (1.0 - vram_used / vram_total)
    else:
        vram = 0.9
    warm = 1.15 if config.default_model and config.default_model in endpoint.models else 1.0
    affinity = 1.05 if resources and task_repo and resources.repo == task_repo else 1.0
    return CandidateScore(
        endpoint_id=endpoint.endpoint_id,
        score=load * capacity * vram * warm * affinity,
        load=load,
        capacity=capacity,
        vram=vram,
        warm=warm,
        affinity=affinity,
    )


def select_model(endpoint: EndpointRecord, config: SchedulerConfig) -> str:
    """``default_model`` when the endpoint serves it, else its first model."""
    if config.default_model and config.default_model in endpoint.models:
        return config.default_model
    return endpoint.models[0]


def decide_route(
    task: RoutingInputs,
    config: SchedulerConfig,
    endpoints: Iterable[EndpointRecord],
    endpoint_state_position: int,
    now: datetime,
    scoring_duration_us: int = 0,
    config_position: int = 0,
) -> RoutingDecision | None:
    """The routing decision for ``task`` at its effective tier, or None with no candidate.

    ``endpoints`` must be in registration order: ties keep that order.
    """
    tier = task.effective_tier
    rule = config.rule_for(tier)
    selected_endpoint: str | None = None
    selected_model: str | None = None
    candidates: tuple[CandidateScore, ...] = ()
    if rule.target == "ollama":
        usable = ollama_candidates(endpoints)
        if not usable:
            return None
        scored = [score_endpoint(e, task.repo, config, now) for e in usable]
        # sorted() is stable, so equal scores keep registration order.
        order = sorted(range(len(usable)), key=lambda i: -scored[i].score)
        candidates = tuple(scored[i] for i in order)
        best = usable[order[0]]
        selected_endpoint, selected_model = best.endpoint_id, select_model(best, config)
    elif rule.target == "claude" and not config.claude_enabled:
        return None
    escalated = task.escalated_to is not None
    return RoutingDecision(
        effective_tier=tier,
        target_type=rule.target,
        selected_endpoint=selected_endpoint,
        selected_model=selected_model,
        fallback_used=escalated,
        fallback_from_tier=task.route_tier if escalated else None,
        fallback_reason=task.fallback_reason if escalated else None,
        candidate_count=len(candidates) if rule.target == "ollama" else 1,
        candidates=candidates,
        classification_reason=task.classification_reason,
        estimated_cost_tier=rule.cost_tier,
        decided_at=now,
        scoring_duration_us=scoring_duration_us,
        endpoint_state_position=endpoint_state_position,
        config_position=config_position,
    )
