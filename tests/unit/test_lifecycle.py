"""Task lifecycle (SPEC §1.1, §1.6): generations, failures, leases, reclaim, TTL, retry, cancel."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest

from tierlog.domain import events as ev
from tierlog.domain.errors import InvalidTransitionError, NotYourTaskError, StaleGenerationError

US = timedelta(microseconds=1)


def _assigned_task(h, agent_id="a1", **kw) -> UUID:
    h.agent(agent_id)
    task_id = h.submit("trivial", **kw)
    assert h.task(task_id).state == "assigned"
    return task_id


def _fail(h, task_id, agent_id="a1"):
    gen = h.task(task_id).generation
    return h.run("fail_task", agent_id=agent_id, task_id=task_id, generation=gen, error="boom")


# --- generations and fencing -----------------------------------------------------------


def test_generation_goes_up_on_every_assignment_and_every_return_to_the_queue(h):
    task_id = h.submit("trivial")
    seen = [h.task(task_id).generation]  # queued: 0
    h.agent("a1")
    seen.append(h.task(task_id).generation)  # assigned: 1
    h.run("mark_agent_offline", agent_id="a1")
    seen.append(h.task(task_id).generation)  # reclaimed -> queued: 2
    h.agent("a2")
    seen.append(h.task(task_id).generation)  # assigned: 3
    _fail(h, task_id, "a2")  # requeued (4), and re-assigned to a2 once its backoff ends (5)
    h.at(h.task(task_id).not_before)
    seen.append(h.task(task_id).generation)
    assert seen == [0, 1, 2, 3, 5]
    requeued = h.of(h.log, ev.TaskRequeued)
    assert [r.generation for r in requeued] == [2, 4]
    assert [a.generation for a in h.of(h.log, ev.TaskAssigned)] == [1, 3, 5]


@pytest.mark.parametrize("command", ["complete_task", "fail_task", "heartbeat"])
@pytest.mark.parametrize("offset", [-1, +1])
def test_stale_generation_is_rejected_and_appends_nothing(h, command, offset):
    task_id = _assigned_task(h)
    extra = {"error": "boom"} if command == "fail_task" else {}
    current = h.task(task_id).generation
    err = h.reject(command, agent_id="a1", task_id=task_id, generation=current + offset, **extra)
    assert isinstance(err, StaleGenerationError)
    assert err.field == "generation"
    assert "stale" in str(err)
    assert h.task(task_id).state == "assigned"


def test_old_generation_after_requeue_is_stale(h):
    task_id = _assigned_task(h)
    _fail(h, task_id)  # generation 1 -> 2 (requeued; re-assigned as 3 after its backoff)
    err = h.reject("complete_task", agent_id="a1", task_id=task_id, generation=1)
    assert isinstance(err, StaleGenerationError)


@pytest.mark.parametrize("command", ["complete_task", "fail_task", "heartbeat"])
def test_another_agents_task_is_rejected(h, command):
    task_id = _assigned_task(h, "owner")
    h.agent("intruder")
    extra = {"error": "boom"} if command == "fail_task" else {}
    gen = h.task(task_id).generation
    err = h.reject(command, agent_id="intruder", task_id=task_id, generation=gen, **extra)
    assert isinstance(err, NotYourTaskError)
    assert err.field == "agent_id"


# --- failures and dead-letter ------------------------------------------------------------


@pytest.mark.parametrize(("max_retries", "failures_to_dead_letter"), [(3, 3), (1, 1), (5, 5)])
def test_failures_requeue_until_retries_are_exhausted(h, max_retries, failures_to_dead_letter):
    task_id = _assigned_task(h, max_retries=max_retries)
    for attempt in range(1, failures_to_dead_letter):
        state, events = _fail(h, task_id)
        assert state == "queued"
        assert h.of(events, ev.TaskFailed)[0].retry_count == attempt
        assert h.of(events, ev.TaskRequeued)[0].reason == "failed"
        assert h.task(task_id).retry_count == attempt
        assert h.task(task_id).state == "queued"  # waiting for its retry backoff
        h.at(h.task(task_id).not_before)
        assert h.task(task_id).state == "assigned"  # the idle agent takes it again
    state, events = _fail(h, task_id)
    assert state == "dead_lettered"
    assert h.names(events)[:2] == ["TaskFailed", "TaskDeadLettered"]
    assert events[1].reason == "max_retries_exhausted"
    assert h.task(task_id).state == "dead_lettered"
    assert h.task(task_id).retry_count == failures_to_dead_letter
    assert h.state.agents["a1"].status == "idle"
    assert task_id not in [key[2] for key in h.state.queue]


def test_complete_releases_the_agent(h):
    task_id = _assigned_task(h)
    _, events = h.run(
        "complete_task", agent_id="a1", task_id=task_id, generation=1, result={"ok": 1}
    )
    assert h.names(events) == ["TaskCompleted"]
    assert h.task(task_id).state == "completed"
    assert h.state.agents["a1"].status == "idle"
    err = h.reject("complete_task", agent_id="a1", task_id=task_id, generation=1)
    assert isinstance(err, InvalidTransitionError)


# --- leases and reclaim ------------------------------------------------------------------


def test_lease_expiry_reclaims_exactly_at_the_lease(h):
    task_id = _assigned_task(h)
    lease = h.task(task_id).lease_expires_at
    assert h.at(lease - US) == []
    events = h.at(lease)
    (reclaimed,) = h.of(events, ev.TaskReclaimed)
    assert (reclaimed.reason, reclaimed.agent_id, reclaimed.previous_generation) == (
        "lease_expired",
        "a1",
        1,
    )
    assert h.task(task_id).state == "queued"
    assert h.task(task_id).generation == 2
    assert h.task(task_id).assigned_to is None
    assert h.state.agents["a1"].status != "busy"


def test_reclaimed_task_goes_to_another_idle_agent(h):
    task_id = _assigned_task(h, "a1")
    h.agent("a2")
    h.at(h.task(task_id).lease_expires_at)
    assert h.task(task_id).assigned_to == "a2"
    assert h.task(task_id).generation == 3


def test_heartbeat_extends_the_lease(h):
    task_id = _assigned_task(h)
    h.clock.advance(200.0)
    lease, events = h.run("heartbeat", agent_id="a1", task_id=task_id, generation=1)
    assert lease == h.now() + timedelta(seconds=300)
    assert h.of(events, ev.TaskHeartbeated)[0].lease_expires_at == lease
    assert h.task(task_id).lease_expires_at == lease
    h.advance(100.0)  # the original lease passes
    assert h.of(h.log, ev.TaskReclaimed) == []
    assert h.at(lease - US) == []
    h.at(lease)
    assert [r.reason for r in h.of(h.log, ev.TaskReclaimed)] == ["lease_expired"]


@pytest.mark.parametrize("command", ["deregister_agent", "mark_agent_offline"])
def test_agent_gone_reclaims_its_task(h, command):
    task_id = _assigned_task(h)
    _, events = h.run(command, agent_id="a1")
    (reclaimed,) = h.of(events, ev.TaskReclaimed)
    assert (reclaimed.reason, reclaimed.agent_id, reclaimed.previous_generation) == (
        "agent_gone",
        "a1",
        1,
    )
    assert h.task(task_id).retry_count == 0
    assert h.task(task_id).state == "queued"
    assert h.task(task_id).generation == 2
    assert h.state.agents["a1"].status in ("offline", "deregistered")


def test_passed_complete_by_reclaims_overdue_then_dead_letters_the_queued_task(h):
    # Issue #13 changed the end: the task back in the queue is past its deadline, so it
    # is dead-lettered (deadline_passed) in the same pass instead of waiting for a TTL.
    h.agent("a1")
    deadline = h.now() + timedelta(seconds=60)
    task_id = h.submit("trivial", complete_by=deadline)
    assert h.at(deadline - US) == []
    events = h.at(deadline)
    assert h.names(events) == ["TaskReclaimed", "TaskRequeued", "TaskDeadLettered"]
    reclaimed, requeued, dead = events
    assert dead.reason == "deadline_passed"
    assert reclaimed.originator_id == task_id
    assert (reclaimed.reason, reclaimed.agent_id, reclaimed.previous_generation) == (
        "overdue",
        "a1",
        1,
    )
    assert (requeued.reason, requeued.generation) == ("overdue", 2)
    assert h.state.agents["a1"].status == "idle"  # free for other work


def test_overdue_task_is_not_handed_out_again_it_is_dead_lettered(h):
    # Before issue #13 it waited in the queue for its TTL (ttl_expired).
    h.agent("a1")
    deadline = h.now() + timedelta(seconds=60)
    task_id = h.submit("standard", complete_by=deadline, description="write the parser tests")
    h.endpoint("gpu-a")
    h.at(deadline)
    assert h.task(task_id).state == "dead_lettered"
    assert h.task(task_id).dead_letter_reason == "deadline_passed"
    assert h.advance(30) == []  # an idle agent, but the task is not handed out again
    assert h.state.agents["a1"].status == "idle"


def test_retrying_an_overdue_task_drops_the_passed_deadline(h):
    h.agent("a1")
    deadline = h.now() + timedelta(seconds=60)
    task_id = h.submit("complex", complete_by=deadline, description="refactor the parser")
    h.at(deadline)
    h.advance(601)
    assert h.task(task_id).state == "dead_lettered"
    _, events = h.run("retry_task", task_id=task_id)
    (retried,) = h.of(events, ev.TaskRetried)
    assert retried.complete_by is None
    assert h.task(task_id).complete_by is None
    assert h.task(task_id).state == "assigned"  # handed out again, no deadline now


def test_heartbeat_after_the_lease_expired_is_rejected(h):
    task_id = _assigned_task(h)
    task = h.task(task_id)
    h.clock.set(task.lease_expires_at)
    h.reject("heartbeat", agent_id="a1", task_id=task_id, generation=task.generation)


# --- TTL ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tier", ["standard", "complex", "unknown", None])
def test_queued_task_older_than_ttl_is_dead_lettered(h, tier):
    task_id = h.submit(tier, description="a task nobody can take right now")
    ttl_at = h.task(task_id).queued_at + timedelta(seconds=600)
    h.at(ttl_at - US)
    assert h.task(task_id).state == "queued"
    events = h.at(ttl_at)
    assert h.of(events, ev.TaskDeadLettered)[0].reason == "ttl_expired"
    assert h.task(task_id).state == "dead_lettered"
    assert h.task(task_id).dead_letter_reason == "ttl_expired"


def test_trivial_task_never_expires(h):
    task_id = h.submit("trivial")
    for seconds in (600.0, 1.0, 3600.0, 86400.0):
        h.advance(seconds)
    assert h.task(task_id).state == "queued"
    assert h.of(h.log, ev.TaskDeadLettered) == []


def test_ttl_counts_from_the_last_return_to_the_queue(h):
    h.endpoint("gpu-a")
    h.agent("a1")
    task_id = h.submit("standard")
    h.clock.advance(200.0)
    h.run("mark_agent_offline", agent_id="a1")  # back to the queue at t = 200
    h.at(h.task(task_id).submitted_at + timedelta(seconds=700))
    assert h.task(task_id).state == "queued"
    h.at(h.task(task_id).queued_at + timedelta(seconds=600))
    assert h.task(task_id).dead_letter_reason == "ttl_expired"


# --- retry, cancel -----------------------------------------------------------------------


def test_retry_of_dead_lettered_task_resets_retries_and_queues_it(h):
    task_id = _assigned_task(h, max_retries=2)
    _fail(h, task_id)
    h.at(h.task(task_id).not_before)  # the retry backoff ends: a1 takes it again
    _fail(h, task_id)
    assert h.task(task_id).state == "dead_lettered"
    gen = h.task(task_id).generation
    h.run("deregister_agent", agent_id="a1")  # so the retried task stays queued
    generation, events = h.run("retry_task", task_id=task_id, requested_by="ops")
    assert h.names(events) == ["TaskRetried"]
    assert generation == gen + 1 == events[0].generation
    task = h.task(task_id)
    assert (task.state, task.retry_count, task.generation) == ("queued", 0, gen + 1)
    assert task.dead_letter_reason is None
    assert task_id in [key[2] for key in h.state.queue]


@pytest.mark.parametrize("state", ["queued", "assigned", "completed", "cancelled"])
def test_retry_only_from_dead_lettered(h, state):
    task_id = _task_in_state(h, state)
    err = h.reject("retry_task", task_id=task_id)
    assert isinstance(err, InvalidTransitionError)
    assert err.field == "task_id"


def _task_in_state(h, state) -> UUID:
    if state == "queued":
        return h.submit("trivial")
    if state == "cancelled":
        task_id = h.submit("trivial")
        h.run("cancel_task", task_id=task_id)
        return task_id
    task_id = _assigned_task(h, max_retries=1)
    if state == "completed":
        h.run("complete_task", agent_id="a1", task_id=task_id, generation=1)
    elif state == "dead_lettered":
        _fail(h, task_id)
    assert h.task(task_id).state == state
    return task_id


@pytest.mark.parametrize(
    ("state", "allowed"),
    [
        ("queued", True),
        ("dead_lettered", True),
        ("assigned", True),  # running work can be cancelled since issue #13
        ("completed", False),
        ("cancelled", False),
    ],
)
def test_cancel_only_from_queued_dead_lettered_or_assigned(h, state, allowed):
    task_id = _task_in_state(h, state)
    if not allowed:
        err = h.reject("cancel_task", task_id=task_id)
        assert isinstance(err, InvalidTransitionError)
        assert err.field == "task_id"
        return
    _, events = h.run("cancel_task", task_id=task_id, requested_by="ops", reason="not needed")
    assert h.names(events) == ["TaskCancelled"]
    assert (events[0].reason, events[0].requested_by) == ("not needed", "ops")
    held = ("a1", 1) if state == "assigned" else (None, None)
    assert (events[0].agent_id, events[0].generation) == held
    assert h.task(task_id).state == "cancelled"
    assert task_id not in [key[2] for key in h.state.queue]
    h.agent("late")
    assert h.task(task_id).state == "cancelled"


# --- idempotency -------------------------------------------------------------------------


def test_idempotent_submission_returns_the_same_task_and_appends_nothing(h):
    first, events = h.run(
        "submit_task", description="build it", complexity_tier="trivial", idempotency_key="k-1"
    )
    assert first.created is True
    assert h.names(events)[:2] == ["TaskSubmitted", "TaskClassified"]
    before = h.state.snapshot()
    # The same body (a different one is a conflict since issue #13: test_idempotency.py).
    again, events = h.run(
        "submit_task", description="build it", complexity_tier="trivial", idempotency_key="k-1"
    )
    assert (again.task_id, again.created, again.state) == (first.task_id, False, "queued")
    assert events == []
    assert h.state.snapshot() == before
    assert len(h.state.tasks) == 1


def test_idempotent_submission_reports_the_current_state(h):
    result, _ = h.run(
        "submit_task", description="x", complexity_tier="trivial", idempotency_key="k"
    )
    h.agent("a1")
    again, events = h.run(
        "submit_task", description="x", complexity_tier="trivial", idempotency_key="k"
    )
    assert (again.task_id, again.state, again.created) == (result.task_id, "assigned", False)
    assert events == []


def test_different_keys_make_different_tasks(h):
    a, _ = h.run("submit_task", description="x", complexity_tier="trivial", idempotency_key="k-a")
    b, _ = h.run("submit_task", description="x", complexity_tier="trivial", idempotency_key="k-b")
    c, _ = h.run("submit_task", description="x", complexity_tier="trivial")
    assert len({a.task_id, b.task_id, c.task_id}) == 3
    assert a.created and b.created and c.created


def test_an_unchanged_health_report_appends_nothing(h):
    endpoint_id = h.endpoint("gpu-a", models=("llama3",))
    _, events = h.run("report_health", endpoint_id=endpoint_id, ok=True, models=["llama3"])
    assert events == []
    _, events = h.run("report_health", endpoint_id=endpoint_id, ok=True)
    assert events == []
    _, events = h.run("report_health", endpoint_id=endpoint_id, ok=True, models=["qwen"])
    assert h.names(events) == ["EndpointHealthReported"]
    _, events = h.run("report_health", endpoint_id=endpoint_id, ok=False)
    assert h.names(events) == ["EndpointHealthReported"]  # a failure is always news


def test_a_state_snapshot_round_trips_exactly(h):
    from tierlog.domain.snapshot import dump_state, load_state

    endpoint = h.endpoint("gpu-a")
    h.agent("a1", capabilities=["python"], ollama_host="gpu-a")
    h.agent("a2")
    for text in ("fix typo", "add tests for the parser", "refactor the storage layer"):
        h.submit(None, description=text)
    h.run("report_health", endpoint_id=endpoint, ok=False)
    h.run("report_health", endpoint_id=endpoint, ok=False)
    h.submit("standard", description="waits for a timer")
    h.advance(1)
    restored = load_state(dump_state(h.state))
    assert restored.snapshot() == h.state.snapshot()
    assert list(restored.idle_order) == list(h.state.idle_order)
    assert {t: list(q) for t, q in restored.queued_by_tier.items() if q} == {
        t: list(q) for t, q in h.state.queued_by_tier.items() if q
    }
