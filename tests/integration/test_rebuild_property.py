"""Laws: state rebuilt from the log equals the live state, whatever the commands were;
and the queue's indexes kept as events apply hold what their definitions say."""

from __future__ import annotations

from typing import Any

from command_strategies import BATCHES, CONFIG, run_batches
from hypothesis import HealthCheck, given, settings
from wiring import runtime_on

from tierlog.domain.clock import VirtualClock
from tierlog.domain.snapshot import dump_state, load_state
from tierlog.domain.state import SchedulerState


def _indexes(state: SchedulerState) -> dict[str, dict[Any, Any]]:
    picture = state.snapshot()
    names = ("untimed_by_tier", "timed_by_tier", "escalated_by_tier", "queued_capabilities")
    return {name: picture[name] for name in names}


def _indexes_by_definition(state: SchedulerState) -> dict[str, dict[Any, Any]]:
    """The same indexes, computed from the queue, the tasks and the timers."""
    found: dict[str, dict[Any, Any]] = {
        "untimed_by_tier": {},
        "timed_by_tier": {},
        "escalated_by_tier": {},
        "queued_capabilities": {},
    }
    for key in state.queue:
        task = state.tasks[key[2]]
        tier = task.effective_tier
        needed = found["queued_capabilities"]
        needed[task.needed_capabilities] = needed.get(task.needed_capabilities, 0) + 1
        if task.escalated_to is not None:
            found["escalated_by_tier"].setdefault(tier, []).append(key)
        if task.task_id in state.timers:
            found["timed_by_tier"].setdefault(tier, []).append(key)
        elif task.escalated_to is None:
            found["untimed_by_tier"].setdefault(tier, []).append(key)
    return found


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batches=BATCHES)
def test_state_rebuilt_from_the_log_equals_live_state(new_store, batches):
    url = new_store()
    clock = VirtualClock()
    runtime = runtime_on(url, CONFIG, clock)
    run_batches(runtime, clock, batches)
    rebuilt = SchedulerState(CONFIG.task_ttl_s)
    for position, event in runtime.log.iter_events():
        rebuilt.apply(event, position)
    assert rebuilt.snapshot() == runtime.state.snapshot()
    assert _indexes(runtime.state) == _indexes_by_definition(runtime.state)
    assert _indexes(load_state(dump_state(runtime.state))) == _indexes(runtime.state)
    # A second runtime started on the same log agrees too.
    restarted = runtime_on(url, CONFIG, clock)
    assert restarted.state.snapshot() == runtime.state.snapshot()
    runtime.log.close()
    restarted.log.close()
