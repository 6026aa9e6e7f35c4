"""The runtime on real stores: group commit, failure isolation, decision provenance."""

from __future__ import annotations

import threading
from uuid import uuid4

import pytest
from wiring import runtime_on

from tierlog.adapters.runtime.clock import SystemClock
from tierlog.adapters.runtime.writer import SchedulerRuntime
from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.clock import VirtualClock
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import InvalidTransitionError, NotFoundError, ValidationError
from tierlog.domain.state import SchedulerState


def _count(runtime: SchedulerRuntime, event_type: type) -> int:
    return sum(1 for _, e in runtime.log.iter_events() if isinstance(e, event_type))


def test_concurrent_commands_share_commits(store_url):
    runtime = runtime_on(store_url, SchedulerConfig(), SystemClock(), writer_poll_s=0.01)
    runtime.start_background()
    results: list[object] = []

    def client(n: int) -> None:
        futures = [runtime.submit(cmd.SubmitTask(description=f"task {n}-{i}")) for i in range(50)]
        results.extend(f.result(timeout=30) for f in futures)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runtime.stop()
    assert len(results) == 400
    assert _count(runtime, ev.TaskSubmitted) == 400
    assert runtime.commits < 400, "commands from concurrent callers must share transactions"
    runtime.log.close()


def test_a_bad_command_in_a_batch_appends_nothing_and_spares_the_others(store_url):
    runtime = runtime_on(store_url, SchedulerConfig(), VirtualClock())
    # Malformed input never becomes a command: it is refused when the command is built.
    with pytest.raises(ValidationError) as refused:
        cmd.SubmitTask(description="bad", priority="asap")
    assert refused.value.field == "priority"
    # A well-formed command the state refuses fails alone inside its batch.
    results = runtime.execute_batch(
        [
            cmd.SubmitTask(description="good one"),
            cmd.CancelTask(task_id=uuid4()),
            cmd.SubmitTask(description="good two"),
        ]
    )
    assert isinstance(results[1], NotFoundError) and results[1].field == "task_id"
    submitted = [
        e.description for _, e in runtime.log.iter_events() if isinstance(e, ev.TaskSubmitted)
    ]
    assert submitted == ["good one", "good two"]
    head = runtime.log.head()
    with pytest.raises(InvalidTransitionError):
        runtime.execute(cmd.RetryTask(task_id=results[0].task_id))
    assert runtime.log.head() == head
    runtime.log.close()


def test_routing_decision_cites_the_endpoint_state_it_read(store_url):
    clock = VirtualClock()
    runtime = runtime_on(store_url, SchedulerConfig(), clock)
    endpoint = runtime.execute(cmd.RegisterEndpoint(host="gpu-a", models=["llama3"]))
    runtime.execute(cmd.ReportHealth(endpoint_id=endpoint, ok=True))
    clock.advance(1)
    runtime.execute_batch(
        [
            cmd.ReportResources(endpoint_id=endpoint, cpu_percent=20.0),
            cmd.RegisterAgent(agent_id="a1"),
            cmd.SubmitTask(description="add tests for the parser module"),
        ]
    )
    events = list(runtime.log.iter_events())
    decision = next(e.decision for _, e in events if isinstance(e, ev.TaskAssigned))
    assert decision.target_type == "ollama"
    cited = dict(events)[decision.endpoint_state_position]
    assert isinstance(cited, ev.EndpointResourcesReported)
    # Replaying up to the cited position gives the endpoint state the decision read.
    state = SchedulerState()
    for position, event in events:
        if position > decision.endpoint_state_position:
            break
        state.apply(event, position)
    assert state.endpoints[endpoint].resources is not None
    assert state.endpoints[endpoint].resources.cpu_percent == 20.0
    runtime.log.close()
