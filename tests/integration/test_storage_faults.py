"""The runtime when the storage fails under it (disk full, read-only, I/O error).

The stores are real; the recorder's insert is made to fail exactly as eventsourcing
reports SQLite's "database or disk is full", for the appends a test chooses, so the
log's own translation (``StoreUnavailableError``) and the writer's recovery are what run.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError
from wiring import runtime_on

from tierlog.adapters.runtime.writer import SchedulerRuntime
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.clock import VirtualClock
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import StoreUnavailableError
from tierlog.domain.state import SchedulerState

CONFIG = SchedulerConfig()
Failing = Callable[[Sequence[ev.DomainEvent]], bool]


def disk_full() -> OperationalError:
    """The error eventsourcing raises when SQLite finds the disk full."""
    cause = sqlite3.OperationalError("database or disk is full")
    cause.sqlite_errorname = "SQLITE_FULL"  # type: ignore[attr-defined]
    error = OperationalError(cause)
    error.__cause__ = cause
    return error


class FullDiskLog(EventLog):
    """A real log whose appends fail as on a full disk while ``failing(events)``."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.failing: Failing | None = None
        self._sqlite_insert = getattr(self.recorder, "insert_rows", None)
        self._insert_events = self.recorder.insert_events
        self.recorder.insert_rows = self._insert_rows
        self.recorder.insert_events = self._insert_stored

    def append(self, events: Sequence[ev.DomainEvent]) -> list[int]:
        self._batch = events
        return super().append(events)

    def _check(self) -> None:
        if self.failing is not None and self.failing(self._batch):
            raise disk_full()

    def _insert_rows(self, rows: Any) -> Any:
        self._check()
        assert self._sqlite_insert is not None
        return self._sqlite_insert(rows)

    def _insert_stored(self, stored: Any, **kwargs: Any) -> Any:
        self._check()
        return self._insert_events(stored, **kwargs)


def _rebuilt(log: EventLog) -> SchedulerState:
    state = SchedulerState(CONFIG.task_ttl_s)
    for position, event in log.iter_events():
        state.apply(event, position)
    return state


def _always(_: Sequence[ev.DomainEvent]) -> bool:
    return True


def _wait(condition: Callable[[], bool], within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def full_disk(store_url: str) -> FullDiskLog:
    return FullDiskLog(store_url)


def test_a_failed_commit_says_storage_unavailable_and_keeps_nothing(full_disk):
    runtime = runtime_on(full_disk, CONFIG, VirtualClock())
    before = runtime.state.snapshot()
    full_disk.failing = _always
    with pytest.raises(StoreUnavailableError) as raised:
        runtime.execute(cmd.SubmitTask(description="lost to a full disk"))
    assert raised.value.code == "storage_unavailable"
    assert raised.value.reason == "the disk is full"
    assert runtime.store_fault is not None and runtime.store_fault.reason == "the disk is full"
    assert runtime.state.snapshot() == before  # the state keeps nothing the log lacks
    full_disk.failing = None
    assert runtime.execute(cmd.SubmitTask(description="after the space returned")).created
    assert runtime.store_fault is None
    assert runtime.state.snapshot() == _rebuilt(full_disk).snapshot()
    full_disk.close()


def test_commands_committed_before_a_failed_pass_are_acknowledged(full_disk):
    # Endpoint changes commit before the pass: if the disk fills between the two, the
    # commands are in the log and their callers hear so; the pass waits for the store.
    clock = VirtualClock()
    runtime = runtime_on(full_disk, CONFIG, clock)
    endpoint = runtime.execute(cmd.RegisterEndpoint(host="gpu-a", models=["llama3"]))
    runtime.execute(cmd.ReportHealth(endpoint_id=endpoint, ok=True))
    clock.advance(1)
    full_disk.failing = lambda events: any(isinstance(e, ev.TaskAssigned) for e in events)
    results = runtime.execute_batch(
        [
            cmd.ReportResources(endpoint_id=endpoint, cpu_percent=20.0),
            cmd.RegisterAgent(agent_id="a1"),
            cmd.SubmitTask(description="add tests for the parser module"),
        ]
    )
    task_id = results[2].task_id
    assert runtime.state.tasks[task_id].state == "queued"
    assert runtime.store_fault is not None
    with pytest.raises(StoreUnavailableError):
        runtime.retry_store()
    full_disk.failing = None
    runtime.retry_store()
    assert runtime.store_fault is None
    assert runtime.state.tasks[task_id].state == "assigned"
    assert runtime.state.snapshot() == _rebuilt(full_disk).snapshot()
    full_disk.close()


def test_the_background_writer_recovers_by_itself(full_disk):
    runtime: SchedulerRuntime = runtime_on(full_disk, CONFIG, VirtualClock(), writer_poll_s=0.01)
    runtime.store_retry_s = 0.05
    runtime.start_background()
    try:
        runtime.call(cmd.RegisterAgent(agent_id="a1"))
        full_disk.failing = _always
        refused = runtime.submit(cmd.SubmitTask(description="refused"))
        assert isinstance(refused.exception(timeout=10), StoreUnavailableError)
        # While the store fails, every commit is refused and the fault stays reported.
        refused_too = runtime.submit(cmd.SubmitTask(description="refused too"))
        assert isinstance(refused_too.exception(timeout=10), StoreUnavailableError)
        assert runtime.store_fault is not None
        full_disk.failing = None
        # Nobody writes: the probe finds the store writable again.
        assert _wait(lambda: runtime.store_fault is None), "the writer never recovered"
        accepted = runtime.call(cmd.SubmitTask(description="accepted"))
        assert accepted.created
        assert runtime.read(lambda s: accepted.task_id in s.tasks)
    finally:
        runtime.stop()
    descriptions = [
        e.description for _, e in full_disk.iter_events() if isinstance(e, ev.TaskSubmitted)
    ]
    assert descriptions == ["accepted"]
    assert runtime.state.snapshot() == _rebuilt(full_disk).snapshot()
    full_disk.close()


def test_the_probe_writes_nothing_to_the_log(store_url):
    log = EventLog(store_url)
    head = log.head()
    log.probe()
    assert log.head() == head
    log.close()
