"""Crafted logs breaking each audit rule of issue #13 (deadlines, cancelling running
work) are reported with their rule; the logs the scheduler writes are clean."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from event_factories import plain_submission, sidecar_decision
from msgspec.structs import replace

from tierlog.domain import events as ev
from tierlog.domain.replay.invariants import InvariantChecker

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEADLINE = T0 + timedelta(seconds=30)
TASK = uuid4()


def submitted(deadline: datetime | None = DEADLINE) -> ev.TaskSubmitted:
    return replace(plain_submission(TASK, 1, T0), complete_by=deadline)


def routed(v: int) -> ev.TaskRouted:
    return ev.TaskRouted(
        originator_id=TASK,
        originator_version=v,
        timestamp=T0,
        generation=1,
        decision=sidecar_decision(T0),
    )


def assigned(v: int) -> ev.TaskAssigned:
    return ev.TaskAssigned(
        originator_id=TASK,
        originator_version=v,
        timestamp=T0,
        agent_id="a1",
        generation=1,
        decision=sidecar_decision(T0),
        lease_expires_at=T0 + timedelta(seconds=300),
    )


def cancelled(v: int, agent: str | None = None, gen: int | None = None) -> ev.TaskCancelled:
    return ev.TaskCancelled(
        originator_id=TASK,
        originator_version=v,
        timestamp=T0 + timedelta(seconds=1),
        reason="r",
        requested_by="op",
        agent_id=agent,
        generation=gen,
    )


def dead(v: int, at: datetime, reason: str = "deadline_passed") -> ev.TaskDeadLettered:
    return ev.TaskDeadLettered(
        originator_id=TASK, originator_version=v, timestamp=at, reason=reason
    )


def timer(kind: str, v: int, at: datetime) -> ev.DomainEvent:
    common = {"originator_id": ev.SCHEDULER_ID, "originator_version": v, "timestamp": at}
    if kind == "start":
        return ev.FallbackTimerStarted(
            task_id=TASK,
            original_tier="standard",
            fallback_tier="complex",
            fires_at=at + timedelta(seconds=5),
            reason="r",
            **common,
        )
    if kind == "fire":
        return ev.FallbackTimerFired(
            task_id=TASK,
            original_tier="standard",
            fallback_tier="complex",
            reason="r",
            wait_ms=5000,
            **common,
        )
    return ev.FallbackTimerCancelled(task_id=TASK, reason="deadline_passed", **common)


def completed(v: int) -> ev.TaskCompleted:
    return ev.TaskCompleted(
        originator_id=TASK,
        originator_version=v,
        timestamp=T0 + timedelta(seconds=2),
        agent_id="a1",
        generation=1,
        result=None,
    )


def _found(events: list[ev.DomainEvent]) -> list[tuple[int, str, str]]:
    checker = InvariantChecker()
    return [
        (v.position, v.rule, v.detail)
        for position, e in enumerate(events, 1)
        for v in checker.check(position, e)
    ]


BROKEN = [
    (
        "no_timer_after_deadline",
        # The bug issue #13 names: the timer of a queued task past its deadline fired.
        [
            submitted(T0 + timedelta(seconds=3)),
            timer("start", 1, T0),
            timer("fire", 2, T0 + timedelta(seconds=5)),
        ],
    ),
    ("dead_letter_at_deadline", [submitted(), dead(2, DEADLINE - timedelta(microseconds=1))]),
    ("dead_letter_at_deadline", [submitted(None), dead(2, DEADLINE)]),
    ("cancel_names_holder", [submitted(), routed(2), assigned(3), cancelled(4)]),
    ("cancel_names_holder", [submitted(), routed(2), assigned(3), cancelled(4, "a2", 1)]),
    ("cancel_names_holder", [submitted(), routed(2), assigned(3), cancelled(4, "a1", 2)]),
    ("cancel_names_holder", [submitted(), cancelled(2, "a1", 1)]),
    # A completion accepted after the running task was cancelled.
    (
        "finished_stays_finished",
        [submitted(), routed(2), assigned(3), cancelled(4, "a1", 1), completed(5)],
    ),
]


@pytest.mark.parametrize(
    ("rule", "events"), BROKEN, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BROKEN)]
)
def test_each_broken_rule_is_reported_at_the_event_that_breaks_it(rule, events):
    found = _found(events)
    assert [(p, r) for p, r, _ in found] == [(len(events), rule)]


def test_the_details_name_what_was_seen():
    (found,) = _found(BROKEN[0][1])
    assert found[2] == (
        "fired at 2026-01-01T00:00:05+00:00, the task's deadline was 2026-01-01T00:00:03+00:00"
    )
    (found,) = _found([submitted(), routed(2), assigned(3), cancelled(4, "a2", 1)])
    assert found[2] == "a1 held generation 1; the cancellation names a2 at generation 1"


def test_what_the_scheduler_writes_is_clean():
    events = [
        submitted(),
        timer("start", 1, T0),
        dead(2, DEADLINE),
        timer("cancel", 2, DEADLINE),
    ]
    assert _found(events) == []
    assert _found([submitted(), routed(2), assigned(3), cancelled(4, "a1", 1)]) == []
    assert _found([submitted(), cancelled(2)]) == []
    # A timer that fires before the deadline is fine; so is one after a retry dropped it.
    assert (
        _found([submitted(), timer("start", 1, T0), timer("fire", 2, T0 + timedelta(seconds=5))])
        == []
    )
    retried = ev.TaskRetried(
        originator_id=TASK,
        originator_version=3,
        timestamp=DEADLINE,
        generation=1,
        requested_by="op",
        complete_by=None,
    )
    late = DEADLINE + timedelta(seconds=10)
    events = [
        submitted(),
        dead(2, DEADLINE),
        retried,
        timer("start", 1, late),
        timer("fire", 2, late + timedelta(seconds=5)),
    ]
    assert _found(events) == []
