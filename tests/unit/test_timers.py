"""Fallback timers (SPEC §1.4): start, cancel, fire exactly on time, escalate one step."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tierlog.domain import events as ev
from tierlog.domain.service import SchedulerService
from tierlog.domain.state import SchedulerState

REASON = "no_healthy_ollama_endpoints"
US = timedelta(microseconds=1)


def _waiting_standard_task(h, *, with_agent=True):
    """A standard task submitted with no healthy Ollama endpoint; returns (task_id, timer)."""
    if with_agent:
        h.agent("a1")
    task_id = h.submit("standard")
    timers = h.of(h.log, ev.FallbackTimerStarted)
    assert len(timers) == 1
    return task_id, timers[0]


def test_no_healthy_endpoint_starts_a_timer_and_does_not_assign(h):
    h.run("register_endpoint", host="gpu-a", models=["llama3"])  # status unknown: no candidate
    h.agent("a1")
    submitted_at = h.now()
    task_id, timer = _waiting_standard_task(h, with_agent=False)

    assert timer.task_id == task_id
    assert timer.original_tier == "standard"
    assert timer.fallback_tier == "complex"
    assert timer.fires_at == submitted_at + timedelta(seconds=5.0)
    assert timer.reason == REASON
    assert h.task(task_id).state == "queued"
    assert h.of(h.log, ev.TaskAssigned) == []
    assert h.of(h.log, ev.TaskRouted) == []
    assert task_id in h.state.timers


def test_no_second_timer_while_one_is_pending(h):
    _waiting_standard_task(h)
    for _ in range(3):
        h.advance(1.0)
        h.run("register_agent", agent_id="a1", capabilities=[])
    assert len(h.of(h.log, ev.FallbackTimerStarted)) == 1


@pytest.mark.parametrize("recover_after", [0.0, 2.5, 4.999999])
def test_endpoint_recovering_within_the_wait_assigns_at_own_tier(h, recover_after):
    task_id, timer = _waiting_standard_task(h)
    h.clock.advance(recover_after)
    endpoint_id = h.endpoint("gpu-a")
    h.at(timer.fires_at + timedelta(seconds=60))  # long past the original fires_at

    assigned = h.of(h.log, ev.TaskAssigned)
    assert len(assigned) == 1
    decision = assigned[0].decision
    assert (decision.effective_tier, decision.target_type) == ("standard", "ollama")
    assert decision.selected_endpoint == endpoint_id
    assert decision.fallback_used is False
    assert decision.fallback_from_tier is None
    cancels = h.of(h.log, ev.FallbackTimerCancelled)
    assert [(c.task_id, c.reason) for c in cancels] == [(task_id, "assigned")]
    assert h.of(h.log, ev.FallbackTimerFired) == []
    assert h.of(h.log, ev.TaskEscalated) == []
    assert h.state.timers == {}


def test_recovery_without_idle_agent_cancels_tier_recovered_and_restarts_on_loss(h):
    task_id, _ = _waiting_standard_task(h, with_agent=False)
    h.clock.advance(1.0)
    endpoint_id = h.endpoint("gpu-a")
    cancels = h.of(h.log, ev.FallbackTimerCancelled)
    assert [(c.task_id, c.reason) for c in cancels] == [(task_id, "tier_recovered")]
    assert h.state.timers == {}

    # The task waits at its own tier: passing the old fires_at changes nothing.
    assert h.advance(10.0) == []
    assert h.of(h.log, ev.FallbackTimerFired) == []

    # The tier loses its last candidate again: a new timer starts from now.
    h.clock.advance(1.0)
    lost_at = h.now()
    h.run("deregister_endpoint", endpoint_id=endpoint_id)
    timers = h.of(h.log, ev.FallbackTimerStarted)
    assert len(timers) == 2
    assert timers[1].fires_at == lost_at + timedelta(seconds=5.0)
    assert timers[1].original_tier == "standard"

    # ... and that one fires on schedule.
    h.at(timers[1].fires_at)
    fired = h.of(h.log, ev.FallbackTimerFired)
    assert [(f.task_id, f.wait_ms) for f in fired] == [(task_id, 5000)]


def test_unhealthy_after_consecutive_failures_restarts_the_timer(h):
    task_id, _ = _waiting_standard_task(h, with_agent=False)
    endpoint_id = h.endpoint("gpu-a")
    h.run("report_health", endpoint_id=endpoint_id, ok=False)
    assert len(h.of(h.log, ev.FallbackTimerStarted)) == 1  # one failure: still healthy
    h.run("report_health", endpoint_id=endpoint_id, ok=False)
    assert h.state.endpoints[endpoint_id].status == "unhealthy"
    assert len(h.of(h.log, ev.FallbackTimerStarted)) == 2
    assert task_id in h.state.timers


def test_timer_fires_exactly_at_fires_at_and_escalates_one_step(h):
    task_id, timer = _waiting_standard_task(h)

    assert h.at(timer.fires_at - US) == []
    assert h.task(task_id).state == "queued"

    events = h.at(timer.fires_at)
    assert h.names(events) == [
        "FallbackTimerFired",
        "TaskEscalated",
        "TaskRouted",
        "TaskAssigned",
        "AgentReserved",
    ]
    fired, escalated = events[0], events[1]
    assert fired.task_id == task_id
    assert fired.wait_ms == 5000
    assert (fired.original_tier, fired.fallback_tier, fired.reason) == (
        "standard",
        "complex",
        REASON,
    )
    assert (escalated.from_tier, escalated.to_tier, escalated.reason) == (
        "standard",
        "complex",
        REASON,
    )
    routed = h.of(events, ev.TaskRouted)
    assigned = h.of(events, ev.TaskAssigned)
    assert len(routed) == len(assigned) == 1
    decision = assigned[0].decision
    assert decision.fallback_used is True
    assert decision.fallback_from_tier == "standard"
    assert decision.fallback_reason == REASON
    assert decision.effective_tier == "complex"
    assert decision.target_type == "claude"
    assert decision.estimated_cost_tier == "api"
    assert routed[0].decision == decision
    assert h.task(task_id).state == "assigned"
    assert h.of(events, ev.FallbackTimerCancelled) == []  # it fired; nothing left to cancel


def test_timer_fires_at_most_once(h):
    task_id, timer = _waiting_standard_task(h, with_agent=False)
    h.at(timer.fires_at)
    for step in (0.0, 1.0, 5.0, 30.0):
        h.advance(step)
    h.agent("a1")
    h.advance(100.0)
    assert len(h.of(h.log, ev.FallbackTimerFired)) == 1
    assert len(h.of(h.log, ev.TaskEscalated)) == 1
    assert h.task(task_id).escalated_to == "complex"


def test_fire_without_idle_agent_then_agent_takes_it_at_the_fallback_tier(h):
    task_id, timer = _waiting_standard_task(h, with_agent=False)
    h.at(timer.fires_at)
    assert h.task(task_id).state == "queued"
    assert h.task(task_id).escalated_to == "complex"
    h.advance(1.0)
    h.agent("a1")
    assigned = h.of(h.log, ev.TaskAssigned)
    assert len(assigned) == 1
    assert assigned[0].decision.effective_tier == "complex"
    assert assigned[0].decision.fallback_used is True
    assert assigned[0].decision.fallback_reason == REASON


def test_fire_appends_the_fallback_routing_decision_once(h):
    """§1.4/§1.5: a fallback is routed at once; its decision is appended even with no agent."""
    h.agent("python-only", capabilities=["python"])  # idle, but cannot take the task
    task_id = h.submit("standard", needed_capabilities=["rust"])
    (timer,) = h.of(h.log, ev.FallbackTimerStarted)
    events = h.at(timer.fires_at)
    routed = h.of(events, ev.TaskRouted)
    assert len(routed) == 1
    assert routed[0].originator_id == task_id
    assert routed[0].decision.fallback_used is True
    assert routed[0].decision.effective_tier == "complex"
    assert routed[0].decision.fallback_from_tier == "standard"
    assert routed[0].decision.fallback_reason == REASON
    assert routed[0].generation == h.task(task_id).generation + 1
    # Not again on later passes while it waits for an agent.
    for _ in range(3):
        h.advance(1.0)
        h.run("register_agent", agent_id="python-only", capabilities=["python"])
    assert len(h.of(h.log, ev.TaskRouted)) == 1
    assert h.task(task_id).state == "queued"
    # The assignment, later, is a decision of its own, still at the fallback tier.
    h.agent("rusty", capabilities=["rust"])
    (assigned,) = h.of(h.log, ev.TaskAssigned)
    assert (assigned.agent_id, assigned.decision.effective_tier) == ("rusty", "complex")
    assert assigned.decision.fallback_used is True


def test_escalated_task_is_never_escalated_again(make):
    h = make(claude_enabled=False)
    h.agent("a1")
    task_id = h.submit("standard")
    (timer,) = h.of(h.log, ev.FallbackTimerStarted)
    h.at(timer.fires_at)
    assert h.task(task_id).escalated_to == "complex"
    for _ in range(5):
        h.advance(10.0)
    assert len(h.of(h.log, ev.FallbackTimerStarted)) == 1
    assert len(h.of(h.log, ev.FallbackTimerFired)) == 1
    assert h.state.timers == {}
    assert h.task(task_id).state == "queued"


def test_top_tier_without_candidate_starts_no_timer_and_waits(make):
    h = make(claude_enabled=False)
    h.agent("a1")
    task_id = h.submit("complex")
    for _ in range(4):
        h.advance(30.0)
    assert h.of(h.log, ev.FallbackTimerStarted) == []
    assert h.of(h.log, ev.TaskAssigned) == []
    assert h.task(task_id).state == "queued"
    # TTL still applies (default 600 s).
    h.at(h.task(task_id).queued_at + timedelta(seconds=600))
    assert h.task(task_id).state == "dead_lettered"
    assert h.task(task_id).dead_letter_reason == "ttl_expired"


def test_cancel_task_cancels_the_pending_timer(h):
    task_id, timer = _waiting_standard_task(h, with_agent=False)
    h.clock.advance(1.0)
    _, events = h.run("cancel_task", task_id=task_id)
    assert h.names(events) == ["TaskCancelled", "FallbackTimerCancelled"]
    assert (events[1].task_id, events[1].reason) == (task_id, "cancelled")
    assert h.state.timers == {}
    h.at(timer.fires_at + timedelta(seconds=1))
    assert h.of(h.log, ev.FallbackTimerFired) == []
    assert h.task(task_id).state == "cancelled"


def test_ttl_dead_letter_cancels_the_pending_timer(h):
    task_id, _ = _waiting_standard_task(h, with_agent=False)
    h.clock.advance(1.0)
    endpoint_id = h.endpoint("gpu-a")  # cancelled: tier_recovered
    h.clock.advance(596.0)  # t = 597
    h.run("deregister_endpoint", endpoint_id=endpoint_id)  # a new timer, fires at t = 602
    (_, timer) = h.of(h.log, ev.FallbackTimerStarted)
    assert timer.fires_at > h.task(task_id).queued_at + timedelta(seconds=600)

    events = h.at(h.task(task_id).queued_at + timedelta(seconds=600))
    assert h.names(events) == ["TaskDeadLettered", "FallbackTimerCancelled"]
    assert events[0].reason == "ttl_expired"
    assert (events[1].task_id, events[1].reason) == (task_id, "dead_lettered")
    h.at(timer.fires_at + timedelta(seconds=1))
    assert h.of(h.log, ev.FallbackTimerFired) == []


def test_timers_rebuilt_from_the_log_fire_at_once_when_overdue(h):
    task_id, timer = _waiting_standard_task(h)
    state = SchedulerState(h.config.task_ttl_s)
    for position, event in enumerate(h.log, start=1):
        state.apply(event, position)
    assert state.snapshot() == h.state.snapshot()

    h.svc = SchedulerService(h.config, state)  # a "restart" on the rebuilt state
    h.at(timer.fires_at + timedelta(seconds=2))
    (fired,) = h.of(h.log, ev.FallbackTimerFired)
    assert fired.task_id == task_id
    assert fired.wait_ms == 7000
    assert h.task(task_id).state == "assigned"


def test_recovery_cancels_the_timer_of_a_task_no_idle_agent_can_do(h):
    # The pass stops early once no idle agent can do what is left of the queue, but not
    # while a timer is pending: the tier came back, so the timer goes (tier_recovered).
    h.agent("a1", capabilities=["python"])
    task_ids = [h.submit("standard", needed_capabilities=["rust"]) for _ in range(3)]
    assert len(h.of(h.log, ev.FallbackTimerStarted)) == 3
    h.clock.advance(1.0)
    h.endpoint("gpu-a")
    cancels = h.of(h.log, ev.FallbackTimerCancelled)
    assert [(c.task_id, c.reason) for c in cancels] == [(t, "tier_recovered") for t in task_ids]
    assert h.state.timers == {}
    assert {h.task(t).state for t in task_ids} == {"queued"}
    assert h.state.queued_capabilities == {("rust",): 3}


def test_a_task_an_idle_agent_can_do_behind_many_it_cannot_is_assigned(h):
    h.endpoint("gpu-a")
    for _ in range(5):
        h.submit("complex", needed_capabilities=["rust"])
    wanted = h.submit("complex", needed_capabilities=["python"], priority="low")
    h.agent("a1", capabilities=["python"])
    assigned = h.of(h.log, ev.TaskAssigned)
    assert [(a.originator_id, a.agent_id) for a in assigned] == [(wanted, "a1")]
    assert h.state.queued_capabilities == {("rust",): 5}
