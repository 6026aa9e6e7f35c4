"""Escalation follows recovery (issue #13): a task escalated to a tier that cannot route
it goes back to its own tier when that tier recovers, with a routing decision of its
own that says why."""

from __future__ import annotations

from datetime import timedelta

from tierlog.domain import events as ev
from tierlog.domain.config import TierRule
from tierlog.domain.replay.determinism import DeterminismChecker
from tierlog.domain.replay.invariants import InvariantChecker

ENDPOINT = "gpu-a:11434"


def _stuck(h, *, with_agent=True):
    """A standard task escalated to complex while Claude is disabled: routed nowhere."""
    if with_agent:
        h.agent("a1")
    h.run("register_endpoint", host="gpu-a", models=["llama3"])  # not healthy yet
    task_id = h.submit("standard")
    h.advance(5.0)  # the fallback timer fires
    (escalated,) = h.of(h.log, ev.TaskEscalated)
    assert (escalated.from_tier, escalated.to_tier) == ("standard", "complex")
    assert h.of(h.log, ev.TaskRouted) == []  # complex cannot route it
    assert h.task(task_id).effective_tier == "complex"
    return task_id


def _recover(h):
    return h.run("report_health", endpoint_id=ENDPOINT, ok=True)[1]


def test_a_stuck_escalation_goes_back_when_its_tier_recovers(make):
    h = make(claude_enabled=False)
    task_id = _stuck(h)
    h.advance(100.0)
    assert h.task(task_id).state == "queued"  # still stuck meanwhile
    events = _recover(h)
    assert h.names(events) == [
        "EndpointHealthReported",
        "TaskDeescalated",
        "TaskRouted",
        "TaskAssigned",
        "AgentReserved",
    ]
    back, routed, assigned = events[1], events[2], events[3]
    assert (back.from_tier, back.to_tier, back.reason) == ("complex", "standard", "tier_recovered")
    assert routed.reason == "tier_recovered"
    decision = routed.decision
    assert (decision.effective_tier, decision.target_type) == ("standard", "ollama")
    assert decision.selected_endpoint == ENDPOINT and not decision.fallback_used
    assert assigned.decision == decision  # the assignment reuses it
    assert h.task(task_id).escalated_to is None


def test_the_decision_is_recorded_even_with_no_agent_free(make):
    h = make(claude_enabled=False)
    task_id = _stuck(h, with_agent=False)
    events = _recover(h)
    assert h.names(events) == ["EndpointHealthReported", "TaskDeescalated", "TaskRouted"]
    assert h.task(task_id).state == "queued" and h.task(task_id).effective_tier == "standard"
    assert [key[2] for key in h.state.queued_by_tier["standard"]] == [task_id]  # own line
    h.advance(1.0)
    h.agent("a1")
    assert h.task(task_id).assigned_to == "a1"
    assert h.task(task_id).routing_decision.target_type == "ollama"


def test_an_escalation_to_a_tier_that_routes_sticks(h):
    h.agent("busy")
    h.submit("trivial")  # keeps "busy" busy, so the escalated task waits
    h.run("register_endpoint", host="gpu-a", models=["llama3"])
    task_id = h.submit("standard")
    h.advance(5.0)
    assert h.task(task_id).effective_tier == "complex"  # Claude is enabled: it routes
    _recover(h)
    assert h.of(h.log, ev.TaskDeescalated) == []
    assert h.task(task_id).effective_tier == "complex"


def test_losing_the_tier_again_starts_a_new_timer(make):
    h = make(claude_enabled=False)
    task_id = _stuck(h, with_agent=False)
    _recover(h)
    h.run("report_health", endpoint_id=ENDPOINT, ok=False)
    h.run("report_health", endpoint_id=ENDPOINT, ok=False)  # unhealthy again
    timers = h.of(h.log, ev.FallbackTimerStarted)
    assert [t.task_id for t in timers] == [task_id, task_id]
    h.advance(5.0)
    assert len(h.of(h.log, ev.TaskEscalated)) == 2
    assert h.task(task_id).effective_tier == "complex"


def test_the_log_audits_clean_and_recomputes(make):
    h = make(claude_enabled=False)
    _stuck(h)
    _recover(h)
    h.advance(1.0)
    invariants, determinism = InvariantChecker(), DeterminismChecker()
    found = []
    for position, event in enumerate(h.log, start=1):
        found += invariants.check(position, event) + determinism.check(position, event)
    assert found == []


def test_a_task_backing_off_is_sent_back_once_its_wait_is_over(make):
    h = make(claude_enabled=False)
    task_id = _stuck(h, with_agent=False)
    h.run("report_health", endpoint_id=ENDPOINT, ok=True)
    assert h.task(task_id).effective_tier == "standard"
    # Nothing left to send back: a later recovery appends no second de-escalation.
    h.advance(timedelta(seconds=1).total_seconds())
    assert len(h.of(h.log, ev.TaskDeescalated)) == 1


def test_only_an_escalation_to_a_tier_that_cannot_route_goes_back(make):
    # trivial -> ollama, escalating to standard -> sidecar (routes); complex cannot route.
    ladder = (
        TierRule(tier="trivial", target="ollama", cost_tier="local"),
        TierRule(tier="standard", target="sidecar", cost_tier="free"),
        TierRule(tier="complex", target="claude", cost_tier="api"),
    )
    h = make(claude_enabled=False, ladder=ladder)
    h.run("register_endpoint", host="gpu-a", models=["llama3"])
    task_id = h.submit("trivial")
    h.advance(5.0)
    assert h.task(task_id).effective_tier == "standard"  # escalated where it routes
    _recover(h)  # its own tier recovers while another tier still cannot route
    assert h.of(h.log, ev.TaskDeescalated) == []
    assert h.task(task_id).effective_tier == "standard"
