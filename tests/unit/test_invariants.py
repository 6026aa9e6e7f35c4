"""Crafted logs that break each invariant are reported with their rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from domain import events as ev
from domain.invariants import InvariantChecker

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TASK = uuid4()
AGENT = ev.agent_aggregate_id("a1")


def _decision(at: datetime) -> ev.RoutingDecision:
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


def submitted(v: int = 1) -> ev.TaskSubmitted:
    return ev.TaskSubmitted(
        originator_id=TASK,
        originator_version=v,
        timestamp=T0,
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


def routed(v: int, gen: int = 1) -> ev.TaskRouted:
    return ev.TaskRouted(
        originator_id=TASK,
        originator_version=v,
        timestamp=T0,
        generation=gen,
        decision=_decision(T0),
    )


def assigned(v: int, gen: int = 1, lease: datetime = T0 + timedelta(seconds=60)) -> ev.TaskAssigned:
    return ev.TaskAssigned(
        originator_id=TASK,
        originator_version=v,
        timestamp=T0,
        agent_id="a1",
        generation=gen,
        decision=_decision(T0),
        lease_expires_at=lease,
    )


def reclaimed(v: int, at: datetime) -> ev.TaskReclaimed:
    return ev.TaskReclaimed(
        originator_id=TASK,
        originator_version=v,
        timestamp=at,
        agent_id="a1",
        reason="lease_expired",
        previous_generation=1,
    )


def timer(kind: str, v: int, at: datetime = T0) -> ev.DomainEvent:
    common = {
        "originator_id": ev.SCHEDULER_ID,
        "originator_version": v,
        "timestamp": at,
        "task_id": TASK,
    }
    if kind == "start":
        return ev.FallbackTimerStarted(
            original_tier="standard",
            fallback_tier="complex",
            fires_at=T0 + timedelta(seconds=5),
            reason="r",
            **common,
        )
    if kind == "fire":
        return ev.FallbackTimerFired(
            original_tier="standard", fallback_tier="complex", reason="r", wait_ms=5000, **common
        )
    return ev.FallbackTimerCancelled(reason="assigned", **common)


def completed(v: int) -> ev.TaskCompleted:
    return ev.TaskCompleted(
        originator_id=TASK,
        originator_version=v,
        timestamp=T0,
        agent_id="a1",
        generation=1,
        result=None,
    )


CASES = [
    ("versions_contiguous", [submitted(1), routed(3)]),
    ("routed_before_assigned", [submitted(1), assigned(2)]),
    (
        "assigned_once_per_generation",
        [submitted(1), routed(2), assigned(3), routed(4), assigned(5)],
    ),
    (
        "reclaim_after_lease",
        [submitted(1), routed(2), assigned(3), reclaimed(4, T0 + timedelta(seconds=59))],
    ),
    ("one_timer_per_task", [submitted(1), timer("start", 1), timer("start", 2)]),
    (
        "timer_ends_once",
        [
            submitted(1),
            timer("start", 1),
            timer("fire", 2, T0 + timedelta(seconds=5)),
            timer("cancel", 3),
        ],
    ),
    (
        "timer_not_early",
        [submitted(1), timer("start", 1), timer("fire", 2, T0 + timedelta(seconds=4))],
    ),
    (
        "timer_only_while_queued",
        [
            submitted(1),
            timer("start", 1),
            routed(2),
            assigned(3),
            completed(4),
            timer("fire", 2, T0 + timedelta(seconds=9)),
        ],
    ),
]


@pytest.mark.parametrize(("rule", "events"), CASES, ids=[c[0] for c in CASES])
def test_each_broken_invariant_is_reported_with_its_rule(rule, events):
    checker = InvariantChecker()
    found = [v for position, e in enumerate(events, 1) for v in checker.check(position, e)]
    assert rule in {v.rule for v in found}
    first = next(v for v in found if v.rule == rule)
    assert first.position == len(events) or rule in ("versions_contiguous",)


def test_a_clean_sequence_reports_nothing():
    checker = InvariantChecker()
    events = [
        submitted(1),
        timer("start", 1),
        timer("cancel", 2),
        routed(2),
        assigned(3),
        reclaimed(4, T0 + timedelta(seconds=60)),
    ]
    assert [v for p, e in enumerate(events, 1) for v in checker.check(p, e)] == []
