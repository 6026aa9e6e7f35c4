"""Events for crafted logs, shared by unit and integration tests (``tests`` is on the
path through its ``conftest.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID, uuid4

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


def completed_with(result: Any, at: datetime, version: int = 1) -> ev.TaskCompleted:
    """A ``TaskCompleted`` of a new task carrying ``result`` (for the decode-back checks)."""
    return ev.TaskCompleted(
        originator_id=uuid4(),
        originator_version=version,
        timestamp=at,
        agent_id="a1",
        generation=1,
        result=result,
    )


class ThingHappenedV2(ev.DomainEvent, frozen=True, kw_only=True):
    """A test event at class version 2: version 1's ``label`` renamed to ``name``, and
    ``size`` added without a default (neither could be read without the upcaster)."""

    stored_name: ClassVar[str] = "ThingHappened"
    class_version: ClassVar[int] = 2
    name: str
    size: int

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 → 2: the rename, and the size version 1 never recorded (0)."""
        state["name"] = state.pop("label")
        state["size"] = 0
