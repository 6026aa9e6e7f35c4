"""Deadlines of queued tasks (issue #13, SPEC §5.1), on the virtual clock: a queued task
whose ``complete_by`` passes is dead-lettered with ``deadline_passed`` (any tier, trivial
too), its pending timer is cancelled with that reason, and no timer fires for it, even
when the pass runs late; a state folded from the log decides the same."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tierlog.domain import events as ev
from tierlog.domain.scheduling import DEADLINE_PASSED
from tierlog.domain.service import SchedulerService
from tierlog.domain.state import SchedulerState
from tierlog.domain.unit_of_work import UnitOfWork

US = timedelta(microseconds=1)


@pytest.mark.parametrize("tier", ["trivial", "standard", "complex"])
def test_a_queued_task_is_dead_lettered_when_its_deadline_passes(h, tier):
    deadline = h.now() + timedelta(seconds=60)
    # No agent, so it waits in the queue (trivial tasks have no TTL at all).
    task_id = h.submit(tier, complete_by=deadline, description="a task nobody takes")
    h.at(deadline - US)
    assert h.task(task_id).state == "queued"
    events = [e for e in h.at(deadline) if not isinstance(e, ev.FallbackTimerCancelled)]
    assert h.names(events) == ["TaskDeadLettered"]
    assert (events[0].originator_id, events[0].reason) == (task_id, DEADLINE_PASSED)
    assert events[0].timestamp == deadline
    task = h.task(task_id)
    assert (task.state, task.dead_letter_reason) == ("dead_lettered", "deadline_passed")
    assert task_id not in [key[2] for key in h.state.queue]
    h.agent("a1")  # an agent now: the task is not handed out
    assert h.task(task_id).state == "dead_lettered"


def test_its_pending_timer_is_cancelled_with_that_reason_and_never_fires(h):
    h.agent("a1")
    deadline = h.now() + timedelta(seconds=3)  # before the 5 s fallback wait ends
    task_id = h.submit("standard", complete_by=deadline)  # no Ollama: a timer starts
    (started,) = h.of(h.log, ev.FallbackTimerStarted)
    events = h.at(deadline)
    assert h.names(events) == ["TaskDeadLettered", "FallbackTimerCancelled"]
    assert (events[1].task_id, events[1].reason) == (task_id, DEADLINE_PASSED)
    assert task_id not in h.state.timers
    assert h.at(started.fires_at + timedelta(seconds=1)) == []
    assert h.of(h.log, ev.FallbackTimerFired) == []
    assert h.of(h.log, ev.TaskEscalated) == []


@pytest.mark.parametrize("late", [timedelta(0), timedelta(seconds=30)])
def test_a_late_pass_past_the_timer_and_the_deadline_fires_nothing(h, late):
    """The bug issue #13 names: the writer wakes (or restarts) after both came due; the
    timer was due first, but the task can no longer be assigned, so it does not fire."""
    h.agent("a1")
    deadline = h.now() + timedelta(seconds=8)  # after the timer's 5 s
    task_id = h.submit("standard", complete_by=deadline)
    events = h.at(deadline + late)
    assert h.names(events) == ["TaskDeadLettered", "FallbackTimerCancelled"]
    assert events[1].reason == DEADLINE_PASSED
    assert h.of(h.log, ev.FallbackTimerFired) == []
    assert h.of(h.log, ev.TaskRouted) == []
    assert h.task(task_id).dead_letter_reason == DEADLINE_PASSED


def test_a_timer_due_before_the_deadline_still_fires_then_the_deadline_ends_it(h):
    h.agent("a1")
    deadline = h.now() + timedelta(seconds=8)
    task_id = h.submit("standard", complete_by=deadline)
    (started,) = h.of(h.log, ev.FallbackTimerStarted)
    fired = h.at(started.fires_at)  # escalated to complex (claude): assigned at once
    assert h.names(fired)[:2] == ["FallbackTimerFired", "TaskEscalated"]
    assert h.task(task_id).state == "assigned"
    h.at(deadline)  # then overdue: reclaimed, back in the queue, and dead-lettered
    assert h.task(task_id).dead_letter_reason == DEADLINE_PASSED


def test_an_escalated_task_with_no_agent_is_dead_lettered_at_its_deadline(h):
    deadline = h.now() + timedelta(seconds=60)
    task_id = h.submit("standard", complete_by=deadline)
    h.advance(5)  # the timer fires; no agent, so it waits at complex
    assert h.task(task_id).escalated_to == "complex"
    events = h.at(deadline)
    assert h.names(events) == ["TaskDeadLettered"]  # no timer left to cancel
    assert events[0].reason == DEADLINE_PASSED


def test_a_task_requeued_after_its_deadline_is_dead_lettered_at_once(h):
    h.agent("a1")
    deadline = h.now() + timedelta(seconds=60)
    task_id = h.submit("trivial", complete_by=deadline)
    events = h.at(deadline)
    assert h.names(events) == ["TaskReclaimed", "TaskRequeued", "TaskDeadLettered"]
    assert [events[0].reason, events[2].reason] == ["overdue", DEADLINE_PASSED]
    assert h.state.agents["a1"].status == "idle"
    assert h.task(task_id).state == "dead_lettered"


def test_a_manual_retry_drops_the_passed_deadline_and_a_live_one_still_applies(h):
    deadline = h.now() + timedelta(seconds=60)
    task_id = h.submit("trivial", complete_by=deadline)
    h.at(deadline)
    h.run("retry_task", task_id=task_id)
    assert (h.task(task_id).state, h.task(task_id).complete_by) == ("queued", None)
    assert h.advance(100_000) == []  # no deadline now (and trivial: no TTL)

    later = h.now() + timedelta(seconds=500)
    other = h.submit("complex", complete_by=later, description="refactor the parser")
    h.advance(400)
    assert h.task(other).state == "queued"
    h.advance(100)
    assert h.task(other).dead_letter_reason == DEADLINE_PASSED  # before its 600 s TTL


def test_the_deadline_is_on_the_heap_so_the_writer_wakes_for_it(h):
    deadline = h.now() + timedelta(seconds=42)
    h.submit("trivial", complete_by=deadline)
    assert h.state.next_deadline() == deadline.timestamp()


def test_a_state_folded_from_the_log_dead_letters_the_same_way(h):
    """Replay is deterministic: the deadline is part of the fold, so a scheduler rebuilt
    from the log (a restart, a follower) decides exactly what the live one decides."""
    h.agent("a1")
    deadline = h.now() + timedelta(seconds=3)
    h.submit("standard", complete_by=deadline)
    h.submit("complex", complete_by=deadline + timedelta(seconds=1), needed_capabilities=["x"])
    rebuilt = SchedulerState(h.config.task_ttl_s)
    for position, event in enumerate(h.log, 1):
        rebuilt.apply(event, position)
    when = h.now() + timedelta(seconds=30)
    live_events = h.at(when)
    with UnitOfWork(rebuilt) as uow:
        SchedulerService(h.config, rebuilt).schedule(uow, when)
        uow.commit()
    assert uow.events == live_events
    assert h.names(live_events) == [
        "TaskDeadLettered",
        "FallbackTimerCancelled",
        "TaskDeadLettered",
    ]
