"""Law: a pass that stops once no idle agent can do any task it has not looked at yet
decides exactly what a pass over the whole queue decides."""

from __future__ import annotations

from itertools import count
from typing import Any
from uuid import UUID

import msgspec
import pytest
from command_strategies import (
    CONFIG,
    HOSTS,
    advance,
    agent_report,
    register_agent,
    report_health,
    run_batches,
    submit_task,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wiring import runtime_on

from tierlog.domain import scheduling
from tierlog.domain.clock import VirtualClock

# Measured, or drawn at random: not decisions (the routing's own timing, tokens).
_NOT_DECIDED = {"scoring_duration_us", "token_digest"}


# Healthy endpoints first, so every tier routes and the stop can happen; then the life
# of tasks among agents of other skills, and now and then an endpoint that fails (a
# tier down: timers to start, and to cancel once it is back).
_SETUP = [
    *(("register_endpoint", {"host": host, "models": ["llama3"]}) for host in HOSTS),
    *(("report_health", {"endpoint_id": f"{host}:11434", "ok": True}) for host in HOSTS),
]
_BATCHES = st.lists(
    st.lists(
        st.one_of(register_agent, submit_task, submit_task, agent_report, advance, report_health),
        min_size=1,
        max_size=6,
    ),
    min_size=3,
    max_size=30,
).map(lambda batches: [_SETUP, *batches])


def _never(state: Any, quiet_tiers: bool) -> bool:
    """The early stop taken out: the pass looks at every queued task."""
    return False


def _decided(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _decided(v) for k, v in value.items() if k not in _NOT_DECIDED}
    if isinstance(value, list):
        return [_decided(v) for v in value]
    return value


def _events_of(url: str, batches: Any) -> list[Any]:
    ids = count(1)
    runtime = runtime_on(url, CONFIG, VirtualClock(), new_task_id=lambda: UUID(int=next(ids)))
    clock = runtime.clock
    assert isinstance(clock, VirtualClock)
    try:
        run_batches(runtime, clock, batches)
        return [
            (type(event).__name__, _decided(msgspec.to_builtins(event)))
            for _, event in runtime.log.iter_events()
        ]
    finally:
        runtime.log.close()


@pytest.mark.parametrize("new_store", ["sqlite"], indirect=True)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batches=_BATCHES)
def test_a_pass_that_stops_early_decides_what_a_whole_pass_decides(
    new_store: Any, monkeypatch: pytest.MonkeyPatch, batches: Any
) -> None:
    stopping = _events_of(new_store(), batches)
    with monkeypatch.context() as patched:
        patched.setattr(scheduling, "_rest_decides_nothing", _never)
        whole = _events_of(new_store(), batches)
    assert stopping == whole
