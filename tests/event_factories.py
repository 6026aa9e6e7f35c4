"""Events for crafted logs, shared by unit and integration tests (``tests`` is on the
path through its ``conftest.py``)."""

from __future__ import annotations

from datetime import datetime

from domain import events as ev


def sidecar_decision(at: datetime) -> ev.RoutingDecision:
    """A routing decision to the trivial tier's sidecar, made at ``at``."""
    return ev.RoutingDecision(
        effective_tier="trivial",
        target_type="sidecar",
        selected_endpoint=None,
        selected_model=None,
        fallback_used=False,
        fallback_from_tier=None,
        fallback_reason=None,
        candidate_count=1,
        candidates=(),
        classification_reason="x",
        estimated_cost_tier="free",
        decided_at=at,
        scoring_duration_us=0,
        endpoint_state_position=0,
    )
