"""Agent liveness (issue #13): an idle agent silent for ``agent_idle_timeout_s`` is
marked offline and gets no work; its next poll brings it back. Polls append nothing.

The harness's agents poll at every step unless a test silences them (``h.silence``).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tierlog.domain import events as ev
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import NotFoundError, ValidationError
from tierlog.domain.liveness import Presence, silent_agents
from tierlog.domain.state import SchedulerState
from tierlog.domain.unit_of_work import UnitOfWork

US = timedelta(microseconds=1)
TIMEOUT = timedelta(seconds=60)  # the default


def _offline(events):
    return [e for e in events if isinstance(e, ev.AgentWentOffline)]


def test_a_silent_idle_agent_goes_offline_exactly_at_the_timeout(h):
    h.agent("a1")
    h.silence("a1")
    seen = h.now()
    assert _offline(h.at(seen + TIMEOUT - US)) == []
    (offline,) = _offline(h.at(seen + TIMEOUT))
    assert (offline.agent_id, offline.reason, offline.last_seen_at) == ("a1", "idle_timeout", seen)
    assert h.state.agents["a1"].status == "offline"
    task_id = h.submit("trivial")
    assert h.task(task_id).state == "queued"  # it gets no work


def test_an_agent_that_polls_stays(h):
    h.agent("a1")
    for _ in range(5):
        h.advance(50.0)  # the harness's agents poll at every step
    assert _offline(h.log) == []
    task_id = h.submit("trivial")
    assert h.task(task_id).assigned_to == "a1"


def test_the_last_poll_counts_not_the_registration(h):
    h.agent("a1")
    h.advance(50.0)  # polled at 50 s
    h.silence("a1")
    assert _offline(h.advance(59.0)) == []  # 109 s: 59 s since the poll
    assert [e.agent_id for e in _offline(h.advance(1.0))] == ["a1"]


def test_a_poll_brings_the_agent_back_and_it_takes_work_at_once(h):
    h.agent("a1")
    h.silence("a1")
    h.advance(60.0)
    task_id = h.submit("trivial")
    back, events = h.poll("a1")
    assert back is True
    assert h.names(events)[:1] == ["AgentCameBack"]
    assert events[0].reason == "polled"
    assert h.task(task_id).assigned_to == "a1"


def test_a_poll_of_a_live_agent_appends_nothing(h):
    h.agent("a1")
    assert h.poll("a1") == (False, [])


def test_an_offline_by_the_operator_is_not_undone_by_a_poll(h):
    h.agent("a1")
    h.run("mark_agent_offline", agent_id="a1")
    assert h.poll("a1") == (False, [])
    assert h.state.agents["a1"].status == "offline"


def test_a_poll_of_an_unknown_agent_is_refused(h):
    err = h.reject("check_in_agent", agent_id="ghost")
    assert isinstance(err, NotFoundError)


def test_a_busy_agent_is_left_to_its_lease(h):
    h.agent("a1")
    task_id = h.submit("trivial")
    h.silence("a1")
    h.advance(200.0)
    assert _offline(h.log) == []
    assert h.task(task_id).assigned_to == "a1"


def test_the_time_it_became_idle_counts_as_seen(h):
    h.agent("a1")
    h.silence("a1")
    task_id = h.submit("trivial")
    h.advance(200.0)  # busy: not a silence
    h.run("complete_task", agent_id="a1", task_id=task_id, generation=1)
    freed = h.now()
    assert _offline(h.at(freed + TIMEOUT - US)) == []
    assert [e.last_seen_at for e in _offline(h.at(freed + TIMEOUT))] == [freed]


def test_a_long_poll_in_progress_counts_as_present(h):
    h.agent("a1")
    h.silence("a1")
    h.svc.presence.poll_started("a1", h.now())
    assert _offline(h.advance(600.0)) == []
    h.svc.presence.poll_ended("a1", h.now())
    assert _offline(h.advance(60.0)) != []


def test_a_restart_counts_as_hearing_from_every_agent(h):
    h.agent("a1")
    h.silence("a1")
    h.clock.advance(3600.0)  # long silent, but nobody was there to hear it
    h.svc.presence.restart(h.now())
    assert _offline(h.advance(59.0)) == []
    assert [e.agent_id for e in _offline(h.advance(1.0))] == ["a1"]


def test_the_timeout_is_a_setting(make):
    h = make(agent_idle_timeout_s=5.0)
    h.agent("a1")
    h.silence("a1")
    assert [e.agent_id for e in _offline(h.advance(5.0))] == ["a1"]
    with pytest.raises(ValidationError) as info:
        SchedulerConfig(agent_idle_timeout_s=0.0)
    assert info.value.field == "agent_idle_timeout_s"


def test_replay_folds_the_offline_fact_without_deciding_it_again(h):
    h.agent("a1")
    h.agent("a2")
    h.silence("a1")
    h.advance(61.0)
    h.poll("a1")
    h.silence("a2")
    h.advance(61.0)
    state = SchedulerState(h.config.task_ttl_s)
    for position, event in enumerate(h.log, start=1):
        state.apply(event, position)
    live = h.state.snapshot()
    assert state.snapshot() == {**live, "position": state.position}
    assert state.agents["a1"].status == "idle" and state.agents["a2"].status == "offline"


def test_the_sweep_is_taken_back_with_a_rolled_back_batch(h):
    h.agent("a1")
    h.silence("a1")
    h.clock.advance(61.0)
    due_before = h.state.liveness_due
    with UnitOfWork(h.state) as uow:
        h.svc.schedule(uow, h.now())
        assert _offline(uow.events) != []
        # left without commit(): rolled back
    assert h.state.liveness_due == due_before
    assert h.state.agents["a1"].status == "idle"
    assert _offline(h.advance(0.0)) != []  # decided again


def test_the_sweep_reports_when_the_next_agent_may_fall_silent(h):
    h.agent("a1")
    h.advance(10.0)
    h.agent("a2")
    presence = Presence()
    silent, due = silent_agents(h.state, presence, 60.0, h.now())
    assert silent == []
    assert due == h.now() - timedelta(seconds=10) + TIMEOUT  # a1's registration


def test_a_deregistered_agent_is_forgotten(h):
    h.agent("a1")
    h.advance(1.0)
    assert "a1" in h.svc.presence.heard_at
    h.run("deregister_agent", agent_id="a1")
    assert "a1" not in h.svc.presence.heard_at
