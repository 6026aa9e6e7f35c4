"""Cancelling running work (issue #13, SPEC §5.1), on the virtual clock: the event names
the agent and the generation, the agent is free at once, its lease and deadline end
with the task, and it hears ``cancelled`` for that generation, and nothing else does."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest

from tierlog.domain.errors import (
    InvalidTransitionError,
    NotYourTaskError,
    StaleGenerationError,
    TaskCancelledError,
)


def _running(h, agent_id: str = "a1", **kw) -> UUID:
    h.agent(agent_id)
    task_id = h.submit("trivial", **kw)
    assert (h.task(task_id).state, h.task(task_id).assigned_to) == ("assigned", agent_id)
    return task_id


def test_cancelling_a_running_task_names_its_agent_and_generation_and_frees_the_agent(h):
    task_id = _running(h)
    _, events = h.run("cancel_task", task_id=task_id, requested_by="ops", reason="not needed")
    assert h.names(events) == ["TaskCancelled"]
    (cancelled,) = events
    assert (cancelled.agent_id, cancelled.generation) == ("a1", 1)
    assert (cancelled.reason, cancelled.requested_by) == ("not needed", "ops")
    task = h.task(task_id)
    assert (task.state, task.assigned_to, task.lease_expires_at) == ("cancelled", None, None)
    assert task.cancelled_agent == "a1"
    agent = h.state.agents["a1"]
    assert (agent.status, agent.task_id, agent.cancelled) == ("idle", None, (task_id, 1))
    assert "a1" in h.state.idle_agents
    assert agent.version == 2  # no agent event: the task's cancellation is the fact


def test_the_freed_agent_takes_the_next_task_in_the_same_pass(h):
    running = _running(h)
    waiting = h.submit("trivial", description="the next one")
    assert h.task(waiting).state == "queued"
    _, events = h.run("cancel_task", task_id=running)
    assert h.names(events) == ["TaskCancelled", "TaskRouted", "TaskAssigned", "AgentReserved"]
    assert h.task(waiting).assigned_to == "a1"
    assert h.state.agents["a1"].cancelled is None  # it holds new work now


def test_no_lease_expiry_or_deadline_follows_a_cancelled_task(h):
    task_id = _running(h, complete_by=h.now() + timedelta(seconds=60))
    h.run("cancel_task", task_id=task_id)
    assert h.advance(10_000) == []  # no reclaim at the lease, no overdue at complete_by
    assert h.state.next_deadline() is None


@pytest.mark.parametrize("command", ["heartbeat", "complete_task", "fail_task"])
def test_the_agent_hears_cancelled_for_the_generation_it_held(h, command):
    task_id = _running(h)
    h.run("cancel_task", task_id=task_id)
    extra = {"error": "boom"} if command == "fail_task" else {}
    err = h.reject(command, agent_id="a1", task_id=task_id, generation=1, **extra)
    assert isinstance(err, TaskCancelledError)
    assert err.code == "cancelled"
    assert err.field == "task_id"
    assert f"task {task_id} was cancelled while agent a1 held it (generation 1)" in err.message


@pytest.mark.parametrize("command", ["heartbeat", "complete_task", "fail_task"])
def test_only_that_agent_at_that_generation_hears_cancelled(h, command):
    task_id = _running(h)
    h.agent("a2")
    h.run("cancel_task", task_id=task_id)
    extra = {"error": "boom"} if command == "fail_task" else {}
    stale = h.reject(command, agent_id="a1", task_id=task_id, generation=2, **extra)
    assert isinstance(stale, StaleGenerationError)
    other = h.reject(command, agent_id="a2", task_id=task_id, generation=1, **extra)
    assert isinstance(other, InvalidTransitionError)
    assert not isinstance(other, TaskCancelledError | NotYourTaskError)


def test_a_queued_cancel_names_no_agent_and_frees_nobody(h):
    h.agent("a1", capabilities=["go"])
    task_id = h.submit("trivial", needed_capabilities=["python"])
    _, events = h.run("cancel_task", task_id=task_id)
    assert (events[0].agent_id, events[0].generation) == (None, None)
    assert h.state.agents["a1"].cancelled is None
    err = h.reject("heartbeat", agent_id="a1", task_id=task_id, generation=0)
    assert not isinstance(err, TaskCancelledError)


def test_a_queued_cancel_ends_its_pending_timer(h):
    h.agent("a1")
    task_id = h.submit("standard")  # no Ollama endpoint: a fallback timer waits
    assert task_id in h.state.timers
    _, events = h.run("cancel_task", task_id=task_id)
    assert h.names(events) == ["TaskCancelled", "FallbackTimerCancelled"]
    assert events[1].reason == "cancelled"
    assert h.advance(60) == []


def test_a_cancelled_task_cannot_be_cancelled_again_or_retried(h):
    task_id = _running(h)
    h.run("cancel_task", task_id=task_id)
    assert isinstance(h.reject("cancel_task", task_id=task_id), InvalidTransitionError)
    assert isinstance(h.reject("retry_task", task_id=task_id), InvalidTransitionError)


def test_a_state_folded_from_the_log_is_the_live_one(h, make):
    task_id = _running(h)
    h.submit("trivial", description="next")
    h.run("cancel_task", task_id=task_id)
    fresh = make()
    for position, event in enumerate(h.log, 1):
        fresh.state.apply(event, position)
    live, folded = h.state.snapshot(), fresh.state.snapshot()
    del live["position"], folded["position"]  # the harness does not number its events
    assert folded["tasks"][task_id] == live["tasks"][task_id]
    assert folded["agents"] == live["agents"]
