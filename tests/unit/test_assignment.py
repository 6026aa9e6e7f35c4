"""Agents and assignment (SPEC §1.5): queue order, capabilities, host preference, leases."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tierlog.domain import events as ev


def _assigned(h, events=None):
    """(task_id, agent_id) of each TaskAssigned, in order."""
    return [
        (e.originator_id, e.agent_id)
        for e in h.of(h.log if events is None else events, ev.TaskAssigned)
    ]


@pytest.mark.parametrize(
    ("priorities", "expected_order"),
    [
        (["low", "urgent", "normal", "high"], [1, 3, 2, 0]),
        (["normal", "normal", "normal"], [0, 1, 2]),
        (["low", "urgent", "low", "urgent", "high"], [1, 3, 4, 0, 2]),
    ],
)
def test_queue_order_is_priority_then_submission(h, priorities, expected_order):
    ids = []
    for i, priority in enumerate(priorities):
        ids.append(h.submit("trivial", description=f"task {i}", priority=priority))
        h.clock.advance(1.0)
    assert [key[2] for key in h.state.queue] == [ids[i] for i in expected_order]
    for i in range(len(ids)):
        h.agent(f"agent-{i}")
    assert [task for task, _ in _assigned(h)] == [ids[i] for i in expected_order]


def test_one_pass_assigns_in_queue_order_to_longest_idle_agents(h):
    low = h.submit("trivial", priority="low")
    urgent = h.submit("trivial", priority="urgent")
    h.run("register_agent", agent_id="first")
    h.run("register_agent", agent_id="second")
    assert _assigned(h) == [(urgent, "first"), (low, "second")]


@pytest.mark.parametrize(
    ("needed", "capabilities", "assigned"),
    [
        ([], [], True),
        ([], ["python"], True),
        (["python"], ["python"], True),
        (["python"], ["go", "python", "rust"], True),
        (["python", "go"], ["go", "python"], True),
        (["python", "go"], ["python"], False),
        (["python"], [], False),
        (["Python"], ["python"], False),
    ],
)
def test_capability_matching(h, needed, capabilities, assigned):
    h.agent("a1", capabilities=capabilities)
    task_id = h.submit("trivial", needed_capabilities=needed)
    assert (h.task(task_id).state == "assigned") is assigned
    assert (h.state.agents["a1"].status == "busy") is assigned


def test_unmatched_task_does_not_block_later_tasks(h):
    blocked = h.submit("trivial", priority="urgent", needed_capabilities=["gpu"])
    other = h.submit("trivial", priority="low")
    h.agent("a1", capabilities=["python"])
    assert _assigned(h) == [(other, "a1")]
    assert h.task(blocked).state == "queued"
    h.agent("gpu-box", capabilities=["gpu", "python"])
    assert _assigned(h)[-1] == (blocked, "gpu-box")


@pytest.mark.parametrize(
    "ollama_host", ["gpu-a", "http://gpu-a:11434", "http://gpu-a:11434/", "gpu-a:11434"]
)
def test_agent_beside_the_selected_endpoint_is_preferred(h, ollama_host):
    h.agent("early", ollama_host="http://gpu-b:11434")
    h.agent("plain")
    h.agent("beside", ollama_host=ollama_host)
    endpoint_id = h.endpoint("gpu-a")
    task_id = h.submit("standard")
    (assigned,) = h.of(h.log, ev.TaskAssigned)
    assert assigned.decision.selected_endpoint == endpoint_id
    assert (assigned.originator_id, assigned.agent_id) == (task_id, "beside")


def test_host_preference_does_not_override_capabilities(h):
    h.agent("early", capabilities=["python"])
    h.agent("beside", capabilities=[], ollama_host="http://gpu-a:11434")
    h.endpoint("gpu-a")
    task_id = h.submit("standard", needed_capabilities=["python"])
    assert _assigned(h) == [(task_id, "early")]


@pytest.mark.parametrize("tier", ["trivial", "complex"])
def test_no_host_preference_off_ollama(h, tier):
    h.endpoint("gpu-a")
    h.agent("early")
    h.agent("beside", ollama_host="gpu-a")
    task_id = h.submit(tier)
    assert _assigned(h) == [(task_id, "early")]


def test_an_agent_holds_at_most_one_task(h):
    h.agent("a1")
    first = h.submit("trivial")
    second = h.submit("trivial")
    h.advance(1.0)
    assert _assigned(h) == [(first, "a1")]
    assert h.task(second).state == "queued"
    assert h.state.agents["a1"].task_id == first

    _, events = h.run("complete_task", agent_id="a1", task_id=first, generation=1)
    assert _assigned(h, events) == [(second, "a1")]
    assert h.task(first).state == "completed"


@pytest.mark.parametrize(
    ("tier", "target", "cost"),
    [("trivial", "sidecar", "free"), ("standard", "ollama", "local"), ("complex", "claude", "api")],
)
def test_routed_precedes_assigned_with_the_same_generation(h, tier, target, cost):
    h.endpoint("gpu-a")
    h.agent("a1")
    task_id = h.submit(tier)
    events = [e for e in h.log if getattr(e, "originator_id", None) == task_id]
    kinds = h.names(events)
    assert kinds.index("TaskRouted") == kinds.index("TaskAssigned") - 1
    routed = h.of(events, ev.TaskRouted)[0]
    assigned = h.of(events, ev.TaskAssigned)[0]
    assert routed.generation == assigned.generation == 1
    assert routed.decision == assigned.decision
    assert assigned.decision.target_type == target
    assert assigned.decision.estimated_cost_tier == cost
    assert assigned.decision.effective_tier == tier
    assert assigned.decision.fallback_used is False
    assert h.task(task_id).generation == 1
    assert h.state.agents["a1"].generation == 1


def test_routing_decision_not_reappended_while_waiting_for_an_agent(h):
    endpoint_id = h.endpoint("gpu-a")
    h.agent("python-only", capabilities=["python"])  # idle, but cannot take the task
    task_id = h.submit("standard", needed_capabilities=["rust"])
    for _ in range(5):
        h.advance(1.0)
        h.run("report_resources", endpoint_id=endpoint_id, cpu_percent=10.0)
        h.run("register_agent", agent_id="python-only", capabilities=["python"])
    assert h.of(h.log, ev.TaskRouted) == []

    h.agent("rusty", capabilities=["rust"])
    routed = [e for e in h.of(h.log, ev.TaskRouted) if e.originator_id == task_id]
    assert len(routed) == 1
    assert _assigned(h) == [(task_id, "rusty")]


def test_waiting_without_any_idle_agent_appends_nothing(h):
    h.endpoint("gpu-a")
    h.submit("standard")
    before = len(h.log)
    for _ in range(5):
        assert h.advance(10.0) == []
    assert len(h.log) == before


@pytest.mark.parametrize("lease_s", [300.0, 30.0, 0.5])
def test_assignment_carries_lease_expiry(make, lease_s):
    h = make(lease_s=lease_s)
    h.agent("a1")
    h.clock.advance(42.0)
    task_id = h.submit("trivial")
    (assigned,) = h.of(h.log, ev.TaskAssigned)
    assert assigned.lease_expires_at == h.now() + timedelta(seconds=lease_s)
    assert h.task(task_id).lease_expires_at == assigned.lease_expires_at
    assert h.task(task_id).assigned_to == "a1"


def test_agent_reserved_follows_assignment(h):
    h.agent("a1")
    task_id = h.submit("trivial")
    kinds = h.names(h.log)
    assert kinds[-3:] == ["TaskRouted", "TaskAssigned", "AgentReserved"]
    reserved = h.of(h.log, ev.AgentReserved)[0]
    assert (reserved.agent_id, reserved.task_id, reserved.generation) == ("a1", task_id, 1)
    assert h.state.agents["a1"].status == "busy"
    assert "a1" not in h.state.idle_agents


def test_offline_and_deregistered_agents_get_nothing(h):
    h.agent("off")
    h.agent("gone")
    h.run("mark_agent_offline", agent_id="off")
    h.run("deregister_agent", agent_id="gone")
    task_id = h.submit("trivial")
    h.advance(1.0)
    assert h.task(task_id).state == "queued"
    h.agent("off")  # re-registering brings it back
    assert _assigned(h) == [(task_id, "off")]
