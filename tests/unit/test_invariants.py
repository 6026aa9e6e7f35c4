"""Crafted logs that break each invariant are reported with their rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from event_factories import plain_submission, sidecar_decision
from msgspec.structs import replace

from tierlog.domain import events as ev
from tierlog.domain.replay.invariants import InvariantChecker

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TASK = uuid4()
AGENT = ev.agent_aggregate_id("a1")


def submitted(v: int = 1) -> ev.TaskSubmitted:
    return plain_submission(TASK, v, T0)


def routed(v: int, gen: int = 1) -> ev.TaskRouted:
    return ev.TaskRouted(
        originator_id=TASK,
        originator_version=v,
        timestamp=T0,
        generation=gen,
        decision=sidecar_decision(T0),
    )


def assigned(v: int, gen: int = 1, lease: datetime = T0 + timedelta(seconds=60)) -> ev.TaskAssigned:
    return ev.TaskAssigned(
        originator_id=TASK,
        originator_version=v,
        timestamp=T0,
        agent_id="a1",
        generation=gen,
        decision=sidecar_decision(T0),
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


def elected(v: int, epoch: int) -> ev.SchedulerLeaderElected:
    return ev.SchedulerLeaderElected(
        originator_id=ev.SCHEDULER_ID, originator_version=v, timestamp=T0, node_id="n", epoch=epoch
    )


CASES = [
    ("leader_epoch_rises", [elected(1, 2), elected(2, 2)]),
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


def _rules(events: list[ev.DomainEvent], checker: InvariantChecker | None = None) -> list[str]:
    checker = checker or InvariantChecker()
    return [v.rule for p, e in enumerate(events, 1) for v in checker.check(p, e)]


def cancelled(v: int) -> ev.TaskCancelled:
    return ev.TaskCancelled(
        originator_id=TASK, originator_version=v, timestamp=T0, reason="r", requested_by="op"
    )


def heartbeat(v: int) -> ev.TaskHeartbeated:
    return ev.TaskHeartbeated(
        originator_id=TASK,
        originator_version=v,
        timestamp=T0,
        agent_id="a1",
        generation=1,
        lease_expires_at=T0 + timedelta(seconds=90),
    )


def test_a_finished_task_is_dropped_and_only_its_version_and_end_remembered():
    checker = InvariantChecker()
    assert _rules([submitted(1), routed(2), assigned(3), completed(4)], checker) == []
    assert checker.tasks == {}
    assert checker.finished == {TASK.hex: 4 << 1 | 0}  # version 4, FINAL_STATES[0]

    checker = InvariantChecker()
    assert _rules([submitted(1), cancelled(2)], checker) == []
    assert checker.tasks == {} and checker.finished == {TASK.hex: 2 << 1 | 1}


def test_a_dead_lettered_task_is_kept_since_it_can_be_retried():
    checker = InvariantChecker()
    dead = ev.TaskDeadLettered(
        originator_id=TASK, originator_version=2, timestamp=T0, reason="ttl_expired"
    )
    retried = ev.TaskRetried(
        originator_id=TASK,
        originator_version=3,
        timestamp=T0,
        generation=1,
        requested_by="op",
        complete_by=None,
    )
    assert _rules([submitted(1), dead], checker) == []
    assert checker.tasks[TASK.hex].state == "dead_lettered" and checker.finished == {}
    assert _rules([retried, routed(4), assigned(5)], checker) == []


def test_an_event_after_the_task_finished_is_reported():
    done = [submitted(1), routed(2), assigned(3), completed(4)]
    checker = InvariantChecker()
    found = [v for p, e in enumerate([*done, heartbeat(5)], 1) for v in checker.check(p, e)]
    assert [(v.position, v.aggregate_id, v.rule) for v in found] == [
        (5, str(TASK), "finished_stays_finished")
    ]
    assert found[0].detail == "TaskHeartbeated after the task was completed"
    # Tracked again from there: its next version is still checked.
    assert _rules([heartbeat(7)], checker) == ["versions_contiguous"]

    # A version that does not follow the finished one is reported as before.
    assert _rules([*done, heartbeat(9)]) == ["versions_contiguous", "finished_stays_finished"]
    # So is a task id submitted again.
    assert _rules([submitted(1), cancelled(2), submitted(1)]) == [
        "versions_contiguous",
        "finished_stays_finished",
    ]


def test_a_timer_firing_for_a_finished_task_names_its_final_state():
    checker = InvariantChecker()
    events = [submitted(1), timer("start", 1), cancelled(2), timer("fire", 2, T0 + timedelta(9))]
    found = [v for p, e in enumerate(events, 1) for v in checker.check(p, e)]
    assert [(v.rule, v.detail) for v in found] == [
        ("timer_only_while_queued", "fired while the task was cancelled")
    ]


def test_only_the_most_recently_finished_tasks_are_remembered():
    other = uuid4()
    checker = InvariantChecker(remember_finished=1)
    assert _rules([submitted(1), cancelled(2)], checker) == []
    assert _rules([replace(submitted(1), originator_id=other)], checker) == []
    assert _rules([replace(cancelled(2), originator_id=other)], checker) == []
    assert checker.finished == {other.hex: 2 << 1 | 1}
    # The forgotten one: still reported, by its version (a store holds one version 1).
    found = checker.check(5, heartbeat(3))
    assert [(v.rule, v.detail) for v in found] == [("versions_contiguous", "version 3 after 0")]
