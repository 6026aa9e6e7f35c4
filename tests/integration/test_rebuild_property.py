"""Law: state rebuilt from the log equals the live state, whatever the commands were."""

from __future__ import annotations

from command_strategies import BATCHES, CONFIG, run_batches
from hypothesis import HealthCheck, given, settings
from wiring import runtime_on

from tierlog.domain.clock import VirtualClock
from tierlog.domain.state import SchedulerState


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
    # A second runtime started on the same log agrees too.
    restarted = runtime_on(url, CONFIG, clock)
    assert restarted.state.snapshot() == runtime.state.snapshot()
    runtime.log.close()
    restarted.log.close()
