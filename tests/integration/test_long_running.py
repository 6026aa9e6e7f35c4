"""A long-running scheduler keeps only live work in memory, answers for what left from
the store, and starts from its newest checkpoint that matches the log (SQLite and
PostgreSQL)."""

from __future__ import annotations

import errno
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from wiring import runtime_on

from tierlog.adapters.history.checkpoints import SCHEDULER_TABLE, checkpoints_path
from tierlog.adapters.runtime.checkpoints import (
    DUMP_SHARE,
    SPACED_DUMP_S,
    next_dump_not_before,
)
from tierlog.adapters.runtime.writer import SchedulerRuntime
from tierlog.adapters.store.event_log import EventLog, sqlite_file
from tierlog.domain import commands as cmd
from tierlog.domain.clock import VirtualClock
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import (
    IdempotencyConflictError,
    InvalidTransitionError,
    StaleGenerationError,
    StoreUnavailableError,
    TaskCancelledError,
)

CONFIG = SchedulerConfig(fallback_wait_s=5, lease_s=60, task_ttl_s=300)
GRACE = {"long_running": True, "settled_grace_s": 10.0, "settled_max": 100}


def _scheduler(url: str, clock: VirtualClock, **settings: Any) -> SchedulerRuntime:
    return runtime_on(url, CONFIG, clock, **{**GRACE, **settings})


def _run_one(runtime: SchedulerRuntime, description: str, key: str | None = None) -> UUID:
    """Submit a task, let agent a1 take it and complete it; its id."""
    result = runtime.execute(cmd.SubmitTask(description=description, idempotency_key=key))
    task = runtime.state.tasks[result.task_id]
    assert task.state == "assigned" and task.assigned_to == "a1"
    runtime.execute(
        cmd.CompleteTask(agent_id="a1", task_id=task.task_id, generation=task.generation)
    )
    return result.task_id  # type: ignore[no-any-return]


def _let_settled_go(runtime: SchedulerRuntime, clock: VirtualClock) -> None:
    """Time passes beyond the grace window and an event is folded: settled records leave."""
    clock.advance(11)
    runtime.execute(cmd.RegisterAgent(agent_id="ticker"))


def _fleet(runtime: SchedulerRuntime) -> None:
    """One healthy endpoint and one agent, a1."""
    endpoint = runtime.execute(cmd.RegisterEndpoint(host="gpu-a", models=["llama3"]))
    runtime.execute(cmd.ReportHealth(endpoint_id=endpoint, ok=True))
    runtime.execute(cmd.RegisterAgent(agent_id="a1"))


@pytest.fixture
def scheduler(new_store: Callable[[], str]) -> tuple[str, VirtualClock, SchedulerRuntime]:
    url = new_store()
    clock = VirtualClock()
    runtime = _scheduler(url, clock)
    _fleet(runtime)
    return url, clock, runtime


def test_completed_tasks_leave_memory_after_the_grace_window(scheduler) -> None:
    _, clock, runtime = scheduler
    done = [_run_one(runtime, f"task {i}") for i in range(5)]
    assert all(task_id in runtime.state.tasks for task_id in done)  # within the grace
    _let_settled_go(runtime, clock)
    assert not any(task_id in runtime.state.tasks for task_id in done)
    assert runtime.memory()["tasks"] == 0


def test_an_idempotency_key_finds_its_task_after_it_left_and_after_a_restart(scheduler) -> None:
    url, clock, runtime = scheduler
    task_id = _run_one(runtime, "keyed", key="order-7")
    again = cmd.SubmitTask(description="keyed", idempotency_key="order-7")
    before = runtime.execute(again)  # in memory still
    _let_settled_go(runtime, clock)
    assert task_id not in runtime.state.tasks
    head = runtime.log.head()
    after = runtime.execute(again)
    assert (before.task_id, before.created) == (after.task_id, after.created) == (task_id, False)
    assert after.state == "completed"
    assert runtime.log.head() == head  # nothing appended
    runtime.stop()  # a last checkpoint
    restarted = _scheduler(url, clock)
    assert restarted.checkpoints is not None
    assert restarted.checkpoints.status.restored_from is not None
    head = restarted.log.head()
    answer = restarted.execute(again)
    assert (answer.task_id, answer.created, answer.state) == (task_id, False, "completed")
    assert restarted.log.head() == head


def test_late_reports_on_a_task_that_left_get_the_same_refusal(scheduler) -> None:
    _, clock, runtime = scheduler
    task_id = _run_one(runtime, "done once")
    generation = 1
    late = [
        cmd.CompleteTask(agent_id="a1", task_id=task_id, generation=generation),
        cmd.FailTask(agent_id="a1", task_id=task_id, generation=generation, error="late"),
        cmd.HeartbeatTask(agent_id="a1", task_id=task_id, generation=generation),
        cmd.CompleteTask(agent_id="a1", task_id=task_id, generation=generation + 1),
    ]
    in_memory = [repr(result) for result in runtime.execute_batch(late)]
    _let_settled_go(runtime, clock)
    assert task_id not in runtime.state.tasks
    head = runtime.log.head()
    results = runtime.execute_batch(late)
    assert [repr(result) for result in results] == in_memory
    assert isinstance(results[0], InvalidTransitionError)  # 409: "... is completed"
    assert "completed" in results[0].message
    assert isinstance(results[3], StaleGenerationError)  # 409
    assert runtime.log.head() == head


def test_a_dead_letter_that_left_can_be_retried_and_cancelled(scheduler) -> None:
    _, clock, runtime = scheduler
    runtime.execute(cmd.DeregisterAgent(agent_id="a1"))
    doomed = [runtime.execute(cmd.SubmitTask(description=f"never {i}")).task_id for i in (1, 2)]
    clock.advance(301)  # past the task TTL: both dead-lettered
    runtime.tick()
    assert all(runtime.state.tasks[t].state == "dead_lettered" for t in doomed)
    _let_settled_go(runtime, clock)
    assert not any(t in runtime.state.tasks for t in doomed)
    generation = runtime.execute(cmd.RetryTask(task_id=doomed[0]))
    assert generation == 1
    assert runtime.state.tasks[doomed[0]].state in ("queued", "assigned")  # live again
    runtime.execute(cmd.CancelTask(task_id=doomed[1]))
    assert runtime.state.tasks[doomed[1]].state == "cancelled"
    with pytest.raises(InvalidTransitionError):
        runtime.execute(cmd.CancelTask(task_id=doomed[1]))  # cancelled: nothing leaves it


def test_a_deregistered_agent_leaves_and_registers_again_on_its_stream(scheduler) -> None:
    url, clock, runtime = scheduler
    runtime.execute(cmd.DeregisterAgent(agent_id="a1"))
    _let_settled_go(runtime, clock)
    assert "a1" not in runtime.state.agents
    runtime.execute(cmd.RegisterAgent(agent_id="a1"))  # its stream goes on: no conflict
    assert runtime.state.agents["a1"].version == 3
    from_zero = _scheduler(url, clock, checkpoints=False, start=False)
    from_zero.load()
    assert from_zero.state.snapshot() == runtime.state.snapshot()


class FailingLookupsLog(EventLog):
    """A real log whose next ``failing`` lookups by key fail as a broken disk would."""

    failing = 0

    def _stream_rows(self, aggregate_ids: Sequence[UUID], before: int | None) -> Any:
        if self.failing:
            self.failing -= 1
            raise OSError(errno.EIO, "Input/output error")
        return super()._stream_rows(aggregate_ids, before)


def test_a_store_fault_while_recalling_refuses_the_command_and_keeps_nothing(
    new_store: Callable[[], str],
) -> None:
    clock = VirtualClock()
    log = FailingLookupsLog(new_store())
    runtime = _scheduler(log, clock)  # type: ignore[arg-type]
    _fleet(runtime)
    task_id = _run_one(runtime, "keyed", key="order-9")
    _let_settled_go(runtime, clock)
    assert task_id not in runtime.state.tasks
    head, before = runtime.log.head(), runtime.state.snapshot()
    again = cmd.SubmitTask(description="keyed", idempotency_key="order-9")
    late = cmd.CompleteTask(agent_id="a1", task_id=task_id, generation=1)
    for command in (again, late):
        log.failing = 1
        with pytest.raises(StoreUnavailableError) as raised:
            runtime.execute(command)
        assert raised.value.code == "storage_unavailable"
        # Not a new task for a key it could not look up, nor a 404 for a task it has.
        assert runtime.log.head() == head and runtime.state.snapshot() == before
    answer = runtime.execute(again)  # the store answers again
    assert (answer.task_id, answer.created, answer.state) == (task_id, False, "completed")
    with pytest.raises(InvalidTransitionError):
        runtime.execute(late)
    assert runtime.log.head() == head
    log.close()


def _checkpoint_rows(url: str) -> list[tuple[int, bytes]]:
    path = sqlite_file(url)
    assert path is not None
    with sqlite3.connect(checkpoints_path(str(path))) as conn:
        rows = conn.execute(
            f"SELECT position, state FROM {SCHEDULER_TABLE} ORDER BY position"
        ).fetchall()
    return [(int(p), bytes(s)) for p, s in rows]


def _update_checkpoint(url: str, position: int, column: str, value: bytes) -> None:
    path = sqlite_file(url)
    assert path is not None
    with sqlite3.connect(checkpoints_path(str(path))) as conn:
        conn.execute(
            f"UPDATE {SCHEDULER_TABLE} SET {column} = ? WHERE position = ?", (value, position)
        )


@pytest.fixture
def sqlite_scheduler(tmp_path: Path) -> tuple[str, VirtualClock, SchedulerRuntime]:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    clock = VirtualClock()
    runtime = _scheduler(url, clock, checkpoint_every_events=5)
    _fleet(runtime)
    for i in range(4):
        _run_one(runtime, f"task {i}")
        runtime.housekeep()
    runtime.stop()
    return url, clock, runtime


@pytest.mark.parametrize(
    ("column", "damage", "why"),
    [
        ("state", b"\x00not msgpack at all", "does not decode"),
        ("chain_hash", b"\x11" * 32, "chain hash is not the log's"),
    ],
)
def test_a_damaged_checkpoint_is_ignored_and_reported(
    sqlite_scheduler, caplog, column: str, damage: bytes, why: str
) -> None:
    url, clock, runtime = sqlite_scheduler
    rows = _checkpoint_rows(url)
    assert len(rows) >= 2
    newest, older = rows[-1][0], rows[-2][0]
    _update_checkpoint(url, newest, column, damage)
    restarted = _scheduler(url, clock, start=False)
    restarted.load()
    status = restarted.checkpoints.status  # type: ignore[union-attr]
    assert [(i.position, why in i.why) for i in status.ignored] == [(newest, True)]
    assert status.restored_from == older  # the newest that matches, then the tail
    assert f"checkpoint at position {newest} ignored" in caplog.text
    from_zero = _scheduler(url, clock, start=False, checkpoints=False)
    from_zero.load()
    assert restarted.state.snapshot() == from_zero.state.snapshot() == runtime.state.snapshot()


def test_a_checkpoint_folded_under_other_settings_is_ignored(sqlite_scheduler) -> None:
    url, clock, runtime = sqlite_scheduler
    restarted = _scheduler(url, clock, start=False, settled_grace_s=99.0)
    restarted.load()
    status = restarted.checkpoints.status  # type: ignore[union-attr]
    assert status.restored_from is None
    assert status.ignored and all("other settings" in i.why for i in status.ignored)
    assert restarted.state.position == runtime.state.position


def test_only_the_newest_checkpoints_are_kept(sqlite_scheduler) -> None:
    url, _, runtime = sqlite_scheduler
    rows = _checkpoint_rows(url)
    assert 2 <= len(rows) <= 3
    assert rows[-1][0] == runtime.state.position  # the last one, written at stop


# --- issue #13: conflicts, cancellations and deadlines survive eviction and restarts --


def test_a_key_with_another_body_conflicts_after_it_left_and_after_a_restart(scheduler) -> None:
    url, clock, runtime = scheduler
    task_id = _run_one(runtime, "keyed", key="order-9")
    other = cmd.SubmitTask(description="keyed, but another thing", idempotency_key="order-9")
    in_memory = runtime.execute_batch([other])[0]
    assert isinstance(in_memory, IdempotencyConflictError)
    _let_settled_go(runtime, clock)
    assert task_id not in runtime.state.tasks
    head = runtime.log.head()
    assert repr(runtime.execute_batch([other])[0]) == repr(in_memory)
    assert (
        runtime.execute(cmd.SubmitTask(description="keyed", idempotency_key="order-9")).task_id
        == task_id
    )
    assert runtime.log.head() == head
    runtime.stop()
    restarted = _scheduler(url, clock)
    assert restarted.checkpoints is not None and restarted.checkpoints.status.ignored == []
    assert repr(restarted.execute_batch([other])[0]) == repr(in_memory)
    assert restarted.log.head() == head


def test_a_cancelled_running_task_that_left_still_tells_its_agent(scheduler) -> None:
    _, clock, runtime = scheduler
    result = runtime.execute(cmd.SubmitTask(description="cancel me"))
    assert runtime.state.tasks[result.task_id].assigned_to == "a1"
    runtime.execute(cmd.CancelTask(task_id=result.task_id))
    assert runtime.state.agents["a1"].status == "idle"
    late = [
        cmd.CompleteTask(agent_id="a1", task_id=result.task_id, generation=1),
        cmd.HeartbeatTask(agent_id="a1", task_id=result.task_id, generation=1),
    ]
    in_memory = [repr(r) for r in runtime.execute_batch(late)]
    _let_settled_go(runtime, clock)
    assert result.task_id not in runtime.state.tasks
    answers = runtime.execute_batch(late)
    assert [repr(r) for r in answers] == in_memory
    assert all(isinstance(r, TaskCancelledError) for r in answers)


def test_a_queued_task_s_deadline_survives_a_restart_from_a_checkpoint(scheduler) -> None:
    url, clock, runtime = scheduler
    deadline = clock.now() + timedelta(seconds=30)
    waiting = runtime.execute(
        cmd.SubmitTask(
            description="nobody can", needed_capabilities=("cobol",), complete_by=deadline
        )
    ).task_id
    runtime.stop()  # a last checkpoint, holding the deadline
    clock.set(deadline + timedelta(seconds=1))
    restarted = _scheduler(url, clock)  # its first pass finds the deadline passed
    assert restarted.checkpoints is not None
    assert restarted.checkpoints.status.restored_from is not None
    task = restarted.state.tasks[waiting]
    assert (task.state, task.dead_letter_reason) == ("dead_lettered", "deadline_passed")


# --- issue #17: checkpoint dumps take a bounded share of the writer's time -----------


def test_a_slow_dump_spaces_the_next_checkpoint(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    runtime = _scheduler(url, VirtualClock(), checkpoint_every_events=1000)
    checkpoints = runtime.checkpoints
    assert checkpoints is not None
    try:
        for batch in range(20):  # 20,000 queued tasks (no agent): a state worth dumping
            runtime.execute_batch(
                [cmd.SubmitTask(description=f"backlog {batch}-{n}") for n in range(1000)]
            )
        position = runtime.state.position
        assert checkpoints.due(position)
        runtime.housekeep()
        took = checkpoints.status.last_dump_s
        assert took >= SPACED_DUMP_S  # tens of ms for 20,000 tasks
        # Events keep coming, but the next dump waits took / DUMP_SHARE seconds.
        assert not checkpoints.due(position + 10 * checkpoints.every_events)
        spaced = next_dump_not_before(0.0, took)
        assert spaced == pytest.approx(took / DUMP_SHARE, rel=0.01)
    finally:
        runtime.stop()


def test_a_slow_write_of_a_dump_spaces_the_next_checkpoint_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    runtime = _scheduler(url, VirtualClock(), checkpoint_every_events=1000)
    checkpoints = runtime.checkpoints
    assert checkpoints is not None
    for batch in range(20):  # 20,000 queued tasks: megabytes to write
        runtime.execute_batch(
            [cmd.SubmitTask(description=f"backlog {batch}-{n}") for n in range(1000)]
        )
    before = time.monotonic()
    runtime.housekeep()
    after_dump = checkpoints.not_before
    runtime.stop()  # the background thread writes the dump before the stop returns
    wrote = checkpoints.status.last_write_s
    assert checkpoints.status.written == 1
    assert wrote > 0
    # A write that took SPACED_DUMP_S or more defers the next dump by twenty times as
    # long; never to before what the dump itself said.
    assert checkpoints.not_before >= next_dump_not_before(before, wrote)
    assert checkpoints.not_before >= after_dump


def test_short_dumps_are_not_spaced() -> None:
    assert next_dump_not_before(100.0, SPACED_DUMP_S / 2) == 100.0
    assert next_dump_not_before(100.0, 0.2) == pytest.approx(100.0 + 0.2 / DUMP_SHARE)
