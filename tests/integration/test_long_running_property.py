"""Law: a long-running scheduler (settled records leave memory, checkpoints kept) that
restarts from its newest checkpoint holds the same state as one that folds the log from
position 0, and as the live one that wrote the log, whatever the commands were."""

from __future__ import annotations

from command_strategies import BUSY_BATCHES, CONFIG, run_batches
from hypothesis import HealthCheck, given, settings
from wiring import runtime_on

from tierlog.domain.clock import VirtualClock

# Records leave after 5 s or beyond 3 kept, so most examples evict, recall, checkpoint.
LONG_RUNNING = {
    "long_running": True,
    "settled_grace_s": 5.0,
    "settled_max": 3,
    "checkpoint_every_events": 7,
}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batches=BUSY_BATCHES)
def test_a_restart_from_a_checkpoint_equals_a_fold_from_position_0(new_store, batches):
    url = new_store()
    clock = VirtualClock()
    live = runtime_on(url, CONFIG, clock, **LONG_RUNNING)
    run_batches(live, clock, batches)
    assert live.checkpoints is not None
    live.checkpoints.close()  # what was offered is written

    from_zero = runtime_on(url, CONFIG, clock, start=False, checkpoints=False, **LONG_RUNNING)
    from_zero.load()
    restarted = runtime_on(url, CONFIG, clock, start=False, **LONG_RUNNING)
    restarted.load()
    assert restarted.checkpoints is not None
    status = restarted.checkpoints.status
    assert status.ignored == []
    if live.checkpoints.status.written:
        assert status.restored_from is not None and status.restored_from > 0
    assert from_zero.state.snapshot() == live.state.snapshot()
    assert restarted.state.snapshot() == from_zero.state.snapshot()
    for runtime in (live, from_zero, restarted):
        runtime.log.close()
