"""at / diff / explain against logs a test folds itself."""

from __future__ import annotations

import pytest

from tierlog.adapters.history.time_travel import (
    diff,
    explain,
    fold_until,
    position_at_time,
    summarise_state,
    task_at,
)
from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.tools.demo import run_demo
from tierlog.domain import events as ev
from tierlog.domain.state import SchedulerState


@pytest.fixture
def small_log(new_store) -> EventLog:
    url = new_store()
    run_demo(url, tasks=25, seed=9)
    return EventLog(url)


def _shown(log: EventLog, state: SchedulerState, task_ids: list[object]) -> dict[str, object]:
    """What ``tierlog at`` shows of a state: its summary and each task."""
    return {
        "summary": summarise_state(state),
        "tasks": {str(t): task_at(log, state, t) for t in task_ids},
    }


def test_at_every_position_equals_folding_events_one_to_n(small_log):
    """``at`` (whose state drops finished tasks) shows at every position exactly what a
    full fold of events 1..N shows, the finished tasks included (each at every tenth
    position, every one at the head)."""
    events = list(small_log.iter_events())
    task_ids = [e.originator_id for _, e in events if isinstance(e, ev.TaskSubmitted)]
    mine = SchedulerState()  # keeps every task
    for position, event in events:
        mine.apply(event, position)
        lean = fold_until(small_log, position)
        assert lean.keep_finished is False
        assert summarise_state(lean) == summarise_state(mine)
        assert lean.tasks == {
            i: t for i, t in mine.tasks.items() if t.state not in ("completed", "cancelled")
        }
        if position % 10 == 0 or position == len(events):
            assert _shown(small_log, lean, task_ids) == _shown(small_log, mine, task_ids)


def test_at_keeps_memory_to_the_live_tasks(small_log):
    head = small_log.head()
    lean, full = fold_until(small_log, head), SchedulerState()
    for position, event in small_log.iter_events():
        full.apply(event, position)
    finished = [t for t in full.tasks.values() if t.state in ("completed", "cancelled")]
    assert finished and len(lean.tasks) == len(full.tasks) - len(finished)
    assert sum(lean.finished_counts.values()) == len(finished)


def test_time_agrees_with_position(small_log):
    events = list(small_log.iter_events())
    for _, event in events[:: max(1, len(events) // 40)]:
        at_time = position_at_time(small_log, event.timestamp)
        later = [p for p, e in events if e.timestamp == event.timestamp]
        assert at_time == max(later)  # the last event stamped at that instant
        assert (
            fold_until(small_log, at_time).snapshot()
            == fold_until(small_log, max(later)).snapshot()
        )


def test_diff_counts_the_changes_between_two_points(small_log):
    head = small_log.head()
    change = diff(small_log, head // 3, head)
    before = summarise_state(fold_until(small_log, head // 3))["counters"]["tasks_by_state"]
    after = summarise_state(fold_until(small_log, head))["counters"]["tasks_by_state"]
    for state, delta in change["counter_deltas"].items():
        assert after.get(state, 0) - before.get(state, 0) == delta
    fired = sum(
        1 for _, e in small_log.iter_events(after=head // 3) if isinstance(e, ev.FallbackTimerFired)
    )
    assert change["timers"].get("fired", 0) == fired


def test_explain_tells_a_fallback_story_in_log_order(new_store):
    log = EventLog(new_store())
    run_demo(log.url, tasks=200, seed=7)  # its long outage makes fallback timers fire
    escalated = next(
        e.originator_id for _, e in log.iter_events() if isinstance(e, ev.TaskEscalated)
    )
    story = explain(log, escalated)
    names = [line["event"] for line in story]
    assert (
        names.index("FallbackTimerStarted")
        < names.index("FallbackTimerFired")
        < names.index("TaskEscalated")
    )
    positions = [line["position"] for line in story]
    assert positions == sorted(positions)
    routed = next(line for line in story if line["event"] == "TaskRouted")
    assert "fallback from standard" in routed["detail"]


def test_stepper_runs_until_an_event_type_or_a_task(small_log):
    from tierlog.adapters.history.stepper import steps

    all_steps = list(steps(small_log))
    assert [s.position for s in all_steps] == list(range(1, small_log.head() + 1))
    first_assigned = next(steps(small_log, until="TaskAssigned"))
    assert type(first_assigned.event).__name__ == "TaskAssigned"
    task = first_assigned.event.originator_id
    for_task = list(steps(small_log, until=str(task)))
    assert for_task and all(
        s.event.originator_id == task or getattr(s.event, "task_id", None) == task for s in for_task
    )


def test_checkpoints_give_the_same_state_and_ignore_another_logs(small_log, tmp_path):
    from tierlog.adapters.history.checkpoints import CheckpointStore, state_at

    head = small_log.head()
    fresh = {p: fold_plain(small_log, p) for p in (head // 3, head // 2, head)}
    state_at(small_log, head, every=50)  # leaves checkpoints every 50 positions
    store = CheckpointStore(small_log)
    assert store.nearest(head) is not None
    store.close()
    for position, snapshot in fresh.items():
        assert state_at(small_log, position, every=50).snapshot() == snapshot


def fold_plain(log: EventLog, position: int) -> dict[str, object]:
    state = SchedulerState(keep_finished=False)
    for pos, event in log.iter_events(stop=position):
        state.apply(event, pos)
    return state.snapshot()


def test_checkpoints_of_a_replaced_log_are_not_used(tmp_path):
    from tierlog.adapters.history.checkpoints import state_at

    url = f"sqlite:///{tmp_path / 'tt.db'}"
    run_demo(url, tasks=20, seed=1)
    first = EventLog(url)
    state_at(first, first.head(), every=40)
    first.close()
    for leftover in [*tmp_path.glob("tt.db*"), *tmp_path.glob("tt.read.db*")]:
        leftover.unlink()  # the checkpoints file stays behind (the read models would stop)
    run_demo(url, tasks=30, seed=2)
    second = EventLog(url)
    head = second.head()
    assert state_at(second, head, every=40).snapshot() == fold_plain(second, head)
    second.close()
