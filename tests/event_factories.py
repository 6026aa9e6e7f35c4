"""Events for crafted logs, shared by unit and integration tests (``tests`` is on the
path through its ``conftest.py``)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from tierlog.domain import events as ev


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


def plain_submission(
    originator_id: UUID, originator_version: int, timestamp: datetime
) -> ev.TaskSubmitted:
    """A submission with nothing asked beyond a description (normal priority, 3 retries)."""
    return ev.TaskSubmitted(
        originator_id=originator_id,
        originator_version=originator_version,
        timestamp=timestamp,
        description="d",
        priority="normal",
        needed_capabilities=(),
        requested_tier=None,
        file_hints=(),
        verification_steps=(),
        success_criteria=(),
        repo=None,
        branch=None,
        metadata={},
        max_retries=3,
        complete_by=None,
        submitted_by="t",
        idempotency_key=None,
    )
