"""The queue and agents read models hold live rows only: a task's queue row goes when
it is completed or cancelled, an agent's row when it deregisters. The events come from
the pure domain (the unit harness), folded by the projections' own code."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from memory_rows import MemoryRows

from tierlog.domain import events as ev
from tierlog.projections.agents import RM_AGENTS
from tierlog.projections.base import FIRST_VERSION, Fold, fold_version
from tierlog.projections.queue import RM_QUEUE
from tierlog.projections.registry import all_projections
from tierlog.projections.tasks import RM_TASKS


def _fold(h: Any) -> MemoryRows:
    """Every read model folded from the harness's log (positions from 1)."""
    rows = MemoryRows()
    Fold([(p, 0, None) for p in all_projections()]).apply(rows, list(enumerate(h.log, 1)))
    return rows


def _queue_row(rows: MemoryRows, task_id: UUID) -> dict[str, Any] | None:
    return rows.read(RM_QUEUE, (str(task_id),))


def _assigned(h: Any, task_id: UUID) -> ev.TaskAssigned:
    return [e for e in h.of(h.log, ev.TaskAssigned) if e.originator_id == task_id][-1]


def test_a_completed_task_leaves_the_queue_read_model_and_stays_in_tasks(h):
    h.agent("a1")
    task_id = h.submit("trivial")
    assigned = _queue_row(_fold(h), task_id)
    assert assigned is not None and assigned["queued"] == 0  # held: a reclaim requeues it
    got = _assigned(h, task_id)
    h.run("complete_task", agent_id="a1", task_id=task_id, generation=got.generation)
    rows = _fold(h)
    assert _queue_row(rows, task_id) is None
    assert rows.read(RM_TASKS, (str(task_id),))["state"] == "completed"  # type: ignore[index]


def test_a_cancelled_task_leaves_the_queue_and_its_timer_does_not_bring_it_back(h):
    task_id = h.submit("standard")  # no endpoint: a fallback timer starts
    assert h.of(h.log, ev.FallbackTimerStarted)
    assert _queue_row(_fold(h), task_id)["queued"] == 1  # type: ignore[index]
    _, events = h.run("cancel_task", task_id=task_id)
    assert h.names(events)[:2] == ["TaskCancelled", "FallbackTimerCancelled"]
    rows = _fold(h)
    assert _queue_row(rows, task_id) is None
    assert rows.read(RM_TASKS, (str(task_id),))["state"] == "cancelled"  # type: ignore[index]


def test_a_dead_lettered_task_keeps_its_row_and_a_retry_puts_it_back_in_the_queue(h):
    h.agent("a1")
    task_id = h.submit("trivial", max_retries=1, complete_by=None)
    got = _assigned(h, task_id)
    h.run("fail_task", agent_id="a1", task_id=task_id, generation=got.generation, error="boom")
    assert h.task(task_id).state == "dead_lettered"
    waiting = _queue_row(_fold(h), task_id)
    assert waiting is not None and waiting["queued"] == 0
    h.run("deregister_agent", agent_id="a1")  # no agent takes it when it is back
    h.run("retry_task", task_id=task_id)
    assert h.task(task_id).state == "queued"
    back = _queue_row(_fold(h), task_id)
    assert back is not None
    assert back["queued"] == 1
    assert back["description"] == "implement the feature"  # kept from the submission
    assert back["generation"] == h.task(task_id).generation


def test_a_dead_lettered_task_that_is_cancelled_leaves_the_queue(h):
    h.agent("a1")
    task_id = h.submit("trivial", max_retries=1)
    got = _assigned(h, task_id)
    h.run("fail_task", agent_id="a1", task_id=task_id, generation=got.generation, error="boom")
    h.run("cancel_task", task_id=task_id)
    assert _queue_row(_fold(h), task_id) is None


def test_after_many_tasks_finish_the_queue_holds_only_the_live_ones(h):
    h.agent("a1")
    done = []
    for _ in range(20):
        task_id = h.submit("trivial")
        got = _assigned(h, task_id)
        h.run("complete_task", agent_id="a1", task_id=task_id, generation=got.generation)
        done.append(task_id)
    cancelled = h.submit("standard")
    h.run("cancel_task", task_id=cancelled)
    waiting = h.submit("standard")
    rows = _fold(h)
    assert rows.keys(RM_QUEUE) == {(str(waiting),)}
    assert len(rows.keys(RM_TASKS)) == 22  # the record keeps every task


def test_a_deregistered_agent_leaves_the_agents_read_model(h):
    h.agent("a1")
    h.agent("a2")
    h.run("mark_agent_offline", agent_id="a2")
    h.run("deregister_agent", agent_id="a1")
    rows = _fold(h)
    assert rows.keys(RM_AGENTS) == {("a2",)}
    assert rows.read(RM_AGENTS, ("a2",))["status"] == "offline"  # type: ignore[index]


def test_a_deregistered_agent_holding_a_task_leaves_and_its_task_is_requeued(h):
    h.agent("a1")
    task_id = h.submit("trivial")
    assert _fold(h).read(RM_AGENTS, ("a1",))["task_id"] == str(task_id)  # type: ignore[index]
    h.run("deregister_agent", agent_id="a1")
    rows = _fold(h)
    assert rows.keys(RM_AGENTS) == set()
    assert _queue_row(rows, task_id)["queued"] == 1  # type: ignore[index]


def test_an_agent_registering_again_after_deregistering_gets_a_fresh_row(h):
    h.agent("a1", capabilities=["old"])
    first = _fold(h).read(RM_AGENTS, ("a1",))
    h.run("deregister_agent", agent_id="a1")
    h.clock.advance(60.0)
    h.agent("a1", capabilities=["new"])
    again = _fold(h).read(RM_AGENTS, ("a1",))
    assert first is not None and again is not None
    assert again["status"] == "idle" and again["capabilities"] == ["new"]
    assert again["registered_at"] > first["registered_at"]


def test_the_changed_folds_have_a_new_version():
    # Queue and agents 2: rows of finished tasks and gone agents deleted; telemetry 2:
    # timers counted by reason, the routing histograms, the timer index. Then every fold
    # once more for the typed columns of issue #16 (ids as bytes, codes, microseconds).
    versions = {p.name: fold_version(p) for p in all_projections()}
    assert versions == {"tasks": 2, "queue": 3, "agents": 3, "endpoints": 2, "telemetry": 3}
    assert FIRST_VERSION == 1
