"""Durable timers: a restart rebuilds pending timers from the log and fires each once."""

from __future__ import annotations

from datetime import timedelta

from wiring import runtime_on

from tierlog.adapters.runtime.writer import SchedulerRuntime
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.clock import VirtualClock
from tierlog.domain.config import SchedulerConfig

CONFIG = SchedulerConfig(fallback_wait_s=5.0)


def _start(url: str, clock: VirtualClock) -> SchedulerRuntime:
    return runtime_on(url, CONFIG, clock)


def _setup_pending_timer(url: str, clock: VirtualClock):
    runtime = _start(url, clock)
    runtime.execute(cmd.RegisterAgent(agent_id="a1"))
    result = runtime.execute(cmd.SubmitTask(description="write tests for the parser module"))
    timer = runtime.state.timers[result.task_id]
    assert timer.fires_at == clock.now() + timedelta(seconds=5)
    runtime.log.close()
    return result.task_id, timer.fires_at


def _count(url: str, event_type: type) -> int:
    log = EventLog(url)
    try:
        return sum(1 for _, e in log.iter_events() if isinstance(e, event_type))
    finally:
        log.close()


def test_restart_fires_pending_timer_at_its_deadline_exactly_once(store_url):
    clock = VirtualClock()
    task_id, fires_at = _setup_pending_timer(store_url, clock)

    runtime = _start(store_url, clock)  # the restart: state rebuilt from the log
    assert task_id in runtime.state.timers
    assert runtime.state.next_deadline() == fires_at.timestamp()
    clock.advance(4.999)
    runtime.tick()
    assert _count(store_url, ev.FallbackTimerFired) == 0
    clock.set(fires_at)
    runtime.tick()
    runtime.tick()
    assert _count(store_url, ev.FallbackTimerFired) == 1
    task = runtime.state.tasks[task_id]
    assert task.state == "assigned"
    assert task.routing_decision is not None and task.routing_decision.fallback_used
    runtime.log.close()

    again = _start(store_url, clock)  # a second restart does not fire it again
    clock.advance(60)
    again.tick()
    assert _count(store_url, ev.FallbackTimerFired) == 1
    again.log.close()


def test_overdue_timer_fires_at_once_after_restart(store_url):
    clock = VirtualClock()
    task_id, _ = _setup_pending_timer(store_url, clock)
    clock.advance(3600)  # the scheduler was down for an hour

    runtime = _start(store_url, clock)
    runtime.tick()
    fired = [
        e
        for _, e in runtime.log.iter_events()
        if isinstance(e, ev.FallbackTimerFired) and e.task_id == task_id
    ]
    assert len(fired) == 1
    assert fired[0].timestamp == clock.now()
    runtime.tick()
    assert _count(store_url, ev.FallbackTimerFired) == 1
    runtime.log.close()


def test_two_runtimes_on_one_log_fire_a_timer_once(store_url):
    clock = VirtualClock()
    _setup_pending_timer(store_url, clock)
    first, second = _start(store_url, clock), _start(store_url, clock)
    clock.advance(5)
    first.tick()
    second.tick()  # its state still shows the timer pending: the append must lose
    first.tick()
    assert _count(store_url, ev.FallbackTimerFired) == 1
    assert second.state.timers == {}
    first.log.close()
    second.log.close()
