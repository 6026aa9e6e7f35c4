"""The runtime under faults: a rival writer between two appends, a store error, callers
that give up. The stores are real; a subclass of EventLog only chooses *when* a second
real runtime appends, or makes one append fail as a locked database would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import pytest
from eventsourcing.persistence import OperationalError
from wiring import runtime_on

from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.clock import VirtualClock
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.state import SchedulerState

CONFIG = SchedulerConfig()


class InterleavingLog(EventLog):
    """A real log that runs ``before[n]`` just before its n-th append."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.appends = 0
        self.before: dict[int, Callable[[], None]] = {}

    def append(self, events: Sequence[ev.DomainEvent]) -> list[int]:
        self.appends += 1
        if self.appends in self.before:
            self.before.pop(self.appends)()
        return super().append(events)


def _rebuilt(log: EventLog) -> SchedulerState:
    state = SchedulerState(CONFIG.task_ttl_s)
    for position, event in log.iter_events():
        state.apply(event, position)
    return state


def _count(log: EventLog, event_type: type) -> int:
    return sum(1 for _, e in log.iter_events() if isinstance(e, event_type))


def test_a_lost_race_after_endpoint_commands_retries_only_the_pass(store_url):
    clock = VirtualClock()
    log = InterleavingLog(store_url)
    a = runtime_on(log, CONFIG, clock)
    b = runtime_on(store_url, CONFIG, clock)
    a.execute(cmd.RegisterAgent(agent_id="x"))
    endpoint = a.execute(cmd.RegisterEndpoint(host="gpu", models=["m"]))
    a.execute(cmd.ReportHealth(endpoint_id=endpoint, ok=True))
    # A's batch appends its commands, then B takes the agent before A's pass appends.
    log.before[log.appends + 2] = lambda: b.execute(cmd.MarkAgentOffline(agent_id="x"))
    results = a.execute_batch(
        [
            cmd.ReportHealth(endpoint_id=endpoint, ok=False),
            cmd.SubmitTask(description="summarise the design notes"),
        ]
    )
    assert results[0] == "healthy"  # one failed check of two: still healthy
    assert _count(log, ev.TaskSubmitted) == 1
    assert a.state.endpoints[endpoint].consecutive_failures == 1
    assert a.state.snapshot() == _rebuilt(log).snapshot()
    log.close()
    b.log.close()


class FailingOnceLog(EventLog):
    """A real log whose next append fails as a locked database would."""

    fail_next = False

    def append(self, events: Sequence[ev.DomainEvent]) -> list[int]:
        if self.fail_next:
            self.fail_next = False
            raise OperationalError("database is locked")
        return super().append(events)


def test_a_store_error_leaves_no_trace_in_state(store_url):
    clock = VirtualClock()
    log = FailingOnceLog(store_url)
    a = runtime_on(log, CONFIG, clock)
    b = runtime_on(store_url, CONFIG, clock)
    before = a.state.position  # the recorded configuration
    log.fail_next = True
    with pytest.raises(OperationalError):
        a.execute(cmd.SubmitTask(description="phantom task"))
    assert a.state.position == before and a.state.tasks == {}
    b.execute(cmd.SubmitTask(description="real task"))
    a.tick()
    assert a.state.snapshot() == _rebuilt(log).snapshot()
    assert len(a.state.tasks) == 1
    log.close()
    b.log.close()


def test_a_cancelled_caller_gets_nothing_run_and_the_writer_lives_on(sqlite_url):
    runtime = runtime_on(sqlite_url, CONFIG, VirtualClock(), writer_poll_s=0.01)
    with runtime._lock:  # hold the writer, as a long batch would
        runtime.start_background()
        first = runtime.submit(cmd.SubmitTask(description="given up on"))
        assert first.cancel()
    second = runtime.submit(cmd.SubmitTask(description="wanted"))
    assert second.result(timeout=10).created
    runtime.stop()
    descriptions = [
        e.description for _, e in runtime.log.iter_events() if isinstance(e, ev.TaskSubmitted)
    ]
    assert descriptions == ["wanted"]
    runtime.log.close()


def test_stop_answers_every_queued_command_and_refuses_new_ones(sqlite_url):
    runtime = runtime_on(sqlite_url, CONFIG, VirtualClock(), writer_poll_s=0.01)
    runtime.start_background()
    futures = [runtime.submit(cmd.SubmitTask(description=f"task {i}")) for i in range(2000)]
    stopper = threading.Thread(target=runtime.stop)
    stopper.start()
    stopper.join(timeout=30)
    assert not stopper.is_alive()
    for future in futures:
        assert future.done()
        if future.exception() is not None:
            assert isinstance(future.exception(), RuntimeError)
    with pytest.raises(RuntimeError, match="not running"):
        runtime.submit(cmd.RunSchedulingPass())
    runtime.log.close()
