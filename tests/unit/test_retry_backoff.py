"""Retry backoff (issue #13): a failed task waits ``not_before`` (recorded in the log,
exponential with deterministic jitter) and its next attempt prefers another agent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from tierlog.domain import events as ev
from tierlog.domain.backoff import RetryBackoff, jitter, not_before, retry_delay_s
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import ValidationError
from tierlog.domain.replay.invariants import InvariantChecker
from tierlog.domain.service import SchedulerService
from tierlog.domain.state import SchedulerState
from tierlog.domain.unit_of_work import UnitOfWork

US = timedelta(microseconds=1)


def _fail(h, task_id, agent_id="a1"):
    task = h.task(task_id)
    return h.run(
        "fail_task", agent_id=agent_id, task_id=task_id, generation=task.generation, error="boom"
    )


def _requeue_of(events) -> ev.TaskRequeued:
    (requeued,) = [e for e in events if isinstance(e, ev.TaskRequeued)]
    return requeued


def test_jitter_is_deterministic_and_within_its_band():
    task = UUID("00000000-0000-4000-8000-000000000001")
    draws = [jitter(task, attempt) for attempt in range(1, 200)]
    assert all(0.5 <= d <= 1.0 for d in draws)
    assert draws == [jitter(task, attempt) for attempt in range(1, 200)]
    assert len(set(draws)) > 150  # it does vary with the attempt
    assert jitter(task, 1) != jitter(uuid4(), 1)


def test_delay_doubles_per_attempt_up_to_the_cap():
    task = uuid4()
    policy = RetryBackoff(base_s=5.0, max_s=300.0)
    for attempt in range(1, 12):
        raw = min(300.0, 5.0 * 2 ** (attempt - 1))
        assert retry_delay_s(task, attempt, policy) == pytest.approx(raw * jitter(task, attempt))
    assert retry_delay_s(task, 10_000, policy) <= 300.0  # no overflow far out
    assert not_before(task, 1, RetryBackoff(base_s=0.0, max_s=300.0), datetime.now(UTC)) is None


def test_a_failure_requeues_with_not_before_and_no_assignment_until_then(h):
    h.agent("a1")
    task_id = h.submit("trivial")
    failed_at = h.now()
    _, events = _fail(h, task_id)
    requeued = _requeue_of(events)
    delay = 5.0 * jitter(task_id, 1)  # the defaults: 5 s, first attempt
    assert requeued.not_before == failed_at + timedelta(microseconds=round(delay * 1e6))
    assert h.task(task_id).not_before == requeued.not_before
    assert h.of(events, ev.TaskAssigned) == []  # a1 is idle, but the task waits
    assert h.at(requeued.not_before - US) == []
    assert h.task(task_id).state == "queued"
    woke = h.at(requeued.not_before)
    (assigned,) = h.of(woke, ev.TaskAssigned)
    assert assigned.timestamp == requeued.not_before


def test_backoff_grows_with_each_failure_and_is_capped(make):
    h = make(retry_backoff_s=2.0, retry_backoff_max_s=5.0)
    h.agent("a1")
    task_id = h.submit("trivial", max_retries=6)
    delays = []
    for attempt in range(1, 6):
        failed_at = h.now()
        requeued = _requeue_of(_fail(h, task_id)[1])
        delays.append((requeued.not_before - failed_at).total_seconds())
        expected = min(5.0, 2.0 * 2 ** (attempt - 1)) * jitter(task_id, attempt)
        assert delays[-1] == pytest.approx(expected, abs=1e-6)
        h.at(requeued.not_before)
    assert max(delays) <= 5.0


def test_the_task_can_set_its_own_backoff_at_submission(h):
    h.agent("a1")
    at_once = h.submit("trivial", retry_backoff_s=0.0)
    _, events = _fail(h, at_once)
    assert _requeue_of(events).not_before is None
    assert h.task(at_once).state == "assigned"  # straight back, as before issue #13
    h.run("complete_task", agent_id="a1", task_id=at_once, generation=h.task(at_once).generation)
    own = h.submit("trivial", retry_backoff_s=100.0, retry_backoff_max_s=1.0)
    failed_at = h.now()
    _, events = _fail(h, own)
    waited = (_requeue_of(events).not_before - failed_at).total_seconds()
    assert waited == pytest.approx(1.0 * jitter(own, 1), abs=1e-6)  # its own cap


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), 1e12, "5", True])
def test_a_bad_backoff_is_refused_and_appends_nothing(h, value):
    for field in ("retry_backoff_s", "retry_backoff_max_s"):
        err = h.reject("submit_task", description="x", **{field: value})
        assert isinstance(err, ValidationError) and err.field == field
    assert h.log == []


@pytest.mark.parametrize("field", ["retry_backoff_s", "retry_backoff_max_s"])
def test_a_bad_backoff_setting_is_refused(field):
    with pytest.raises(ValidationError) as info:
        SchedulerConfig(**{field: -1.0})
    assert info.value.field == field
    SchedulerConfig(**{field: 0.0})  # 0: no wait


def test_the_next_attempt_goes_to_another_agent_that_fits(h):
    h.agent("a1")
    task_id = h.submit("trivial")
    requeued = _requeue_of(_fail(h, task_id)[1])
    h.agent("a2")  # idle for less time than a1, which would otherwise go first
    (assigned,) = h.of(h.at(requeued.not_before), ev.TaskAssigned)
    assert assigned.agent_id == "a2"


def test_the_failed_agent_is_preferred_last_not_excluded(h):
    h.agent("a1", capabilities=["gpu"])
    h.agent("a2")
    task_id = h.submit("trivial", needed_capabilities=["gpu"])
    assert h.task(task_id).assigned_to == "a1"
    requeued = _requeue_of(_fail(h, task_id)[1])
    (assigned,) = h.of(h.at(requeued.not_before), ev.TaskAssigned)
    assert assigned.agent_id == "a1"  # the only one that fits


def test_the_failed_agent_goes_after_one_beside_the_endpoint_and_any_other(h):
    h.endpoint("gpu-a")
    h.agent("a1", ollama_host="http://gpu-a:11434")
    task_id = h.submit("standard")
    assert h.task(task_id).assigned_to == "a1"
    requeued = _requeue_of(_fail(h, task_id)[1])
    h.agent("a3")  # not beside gpu-a, but it did not fail the task
    (assigned,) = h.of(h.at(requeued.not_before), ev.TaskAssigned)
    assert assigned.agent_id == "a3"


def test_no_fallback_timer_while_a_task_backs_off(h):
    h.endpoint("gpu-a")
    h.agent("a1")
    task_id = h.submit("standard")
    requeued = _requeue_of(_fail(h, task_id)[1])
    h.run("report_health", endpoint_id="gpu-a:11434", ok=False)
    h.run("report_health", endpoint_id="gpu-a:11434", ok=False)  # no candidate now
    assert h.of(h.log, ev.FallbackTimerStarted) == []
    started = h.of(h.at(requeued.not_before), ev.FallbackTimerStarted)
    assert [t.task_id for t in started] == [task_id]  # waiting for the tier from now on


def _folded(log, config):
    state = SchedulerState(config.task_ttl_s)
    for position, event in enumerate(log, start=1):
        state.apply(event, position)
    return state


def test_not_before_is_honoured_after_a_restart(h):
    h.agent("a1")
    task_id = h.submit("trivial")
    requeued = _requeue_of(_fail(h, task_id)[1])
    # A new process folds the log: the wait is in it, and so is the wake-up.
    state = _folded(h.log, h.config)
    assert state.tasks[task_id].not_before == requeued.not_before
    assert state.next_deadline() == requeued.not_before.timestamp()
    svc = SchedulerService(h.config, state)
    svc.presence.restart(requeued.not_before - US)
    for at, assigned in ((requeued.not_before - US, False), (requeued.not_before, True)):
        with UnitOfWork(state) as uow:
            svc.schedule(uow, at)
            uow.commit()
        assert any(isinstance(e, ev.TaskAssigned) for e in uow.events) is assigned


def test_the_audit_reports_an_assignment_before_not_before(h):
    h.agent("a1")
    task_id = h.submit("trivial")
    requeued = _requeue_of(_fail(h, task_id)[1])
    h.at(requeued.not_before)
    clean = InvariantChecker()
    assert [v for i, e in enumerate(h.log, 1) for v in clean.check(i, e)] == []
    # The same log, with the assignment moved a second before the wait ended.
    early = requeued.not_before - timedelta(seconds=1)
    crafted = [
        ev.TaskAssigned(**{**_fields(e), "timestamp": early})
        if isinstance(e, ev.TaskAssigned) and e.generation == requeued.generation + 1
        else e
        for e in h.log
    ]
    checker = InvariantChecker()
    found = [v for i, e in enumerate(crafted, 1) for v in checker.check(i, e)]
    assert [v.rule for v in found] == ["assigned_after_backoff"]
    assert found[0].aggregate_id == str(task_id)
    assert requeued.not_before.isoformat() in found[0].detail


def _fields(event):
    return {f: getattr(event, f) for f in event.__struct_fields__}
