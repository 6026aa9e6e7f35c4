"""Law: state rebuilt from the log equals the live state, whatever the commands were."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wiring import runtime_on

from tierlog.adapters.runtime.writer import SchedulerRuntime
from tierlog.domain import commands as cmd
from tierlog.domain.clock import VirtualClock
from tierlog.domain.commands import COMMANDS
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import ValidationError
from tierlog.domain.state import SchedulerState

AGENTS = ["a1", "a2", "a3"]
HOSTS = ["gpu-a", "gpu-b"]
CONFIG = SchedulerConfig(fallback_wait_s=5, lease_s=60, task_ttl_s=300)

agent_ids = st.sampled_from(AGENTS)
endpoint_ids = st.sampled_from([f"{h}:11434" for h in HOSTS])
descriptions = st.sampled_from(
    ["fix typo in docs", "refactor the parser", "add tests for the queue module", "", "x " * 60]
)


def _task_index() -> st.SearchStrategy[int]:
    return st.integers(min_value=0, max_value=20)


commands = st.one_of(
    st.tuples(
        st.just("register_agent"),
        st.fixed_dictionaries(
            {
                "agent_id": agent_ids,
                "capabilities": st.lists(st.sampled_from(["python", "rust"]), max_size=2),
                "ollama_host": st.sampled_from([None, *HOSTS]),
            }
        ),
    ),
    st.tuples(st.just("deregister_agent"), st.fixed_dictionaries({"agent_id": agent_ids})),
    st.tuples(st.just("mark_agent_offline"), st.fixed_dictionaries({"agent_id": agent_ids})),
    st.tuples(
        st.just("register_endpoint"),
        st.fixed_dictionaries(
            {
                "host": st.sampled_from(HOSTS),
                "models": st.sampled_from([["llama3"], []]),
            }
        ),
    ),
    st.tuples(
        st.just("report_health"),
        st.fixed_dictionaries(
            {
                "endpoint_id": endpoint_ids,
                "ok": st.booleans(),
            }
        ),
    ),
    st.tuples(
        st.just("report_resources"),
        st.fixed_dictionaries(
            {
                "endpoint_id": endpoint_ids,
                "cpu_percent": st.sampled_from([None, 10.0, 90.0, 500.0]),
                "repo": st.sampled_from([None, "acme/web"]),
            }
        ),
    ),
    st.tuples(
        st.just("submit_task"),
        st.fixed_dictionaries(
            {
                "description": descriptions,
                "priority": st.sampled_from(["urgent", "normal", "low", "asap"]),
                "needed_capabilities": st.lists(st.sampled_from(["python", "rust"]), max_size=1),
                "complexity_tier": st.sampled_from([None, "trivial", "standard", "complex"]),
                "idempotency_key": st.sampled_from([None, None, "k1", "k2"]),
                "max_retries": st.sampled_from([1, 3]),
            }
        ),
    ),
    st.tuples(
        st.just("agent_report"),
        st.fixed_dictionaries(
            {
                "task": _task_index(),
                "outcome": st.sampled_from(["complete", "fail", "heartbeat"]),
                "stale": st.booleans(),
            }
        ),
    ),
    st.tuples(st.just("cancel_task"), st.fixed_dictionaries({"task": _task_index()})),
    st.tuples(st.just("retry_task"), st.fixed_dictionaries({"task": _task_index()})),
    st.tuples(st.just("advance"), st.sampled_from([0.5, 4.0, 5.0, 61.0, 301.0])),
)


def _command(runtime: SchedulerRuntime, name: str, args: Any) -> cmd.Command | None:
    """The command, or None when there is none to give or its input is invalid (a bad
    command is refused when it is built, before it reaches the runtime)."""
    try:
        return _build(runtime, name, args)
    except ValidationError:
        return None


def _build(runtime: SchedulerRuntime, name: str, args: Any) -> cmd.Command | None:
    tasks = list(runtime.state.tasks.values())
    wanted = {"agent_report": "assigned", "retry_task": "dead_lettered", "cancel_task": "queued"}
    if name in wanted:
        # Prefer tasks the command can apply to, so the valid paths are exercised too.
        tasks = [t for t in tasks if t.state == wanted[name]] or tasks
        if not tasks:
            return None
        task = tasks[args["task"] % len(tasks)]
        if name != "agent_report":
            return COMMANDS[name](task_id=task.task_id)
        verb = {"complete": "complete_task", "fail": "fail_task", "heartbeat": "heartbeat"}
        extra = {"error": "boom"} if args["outcome"] == "fail" else {}
        ids = {
            "agent_id": task.assigned_to or "a1",
            "task_id": task.task_id,
            "generation": max(0, task.generation - 1) if args["stale"] else task.generation,
        }
        return COMMANDS[verb[args["outcome"]]](**ids, **extra)
    return COMMANDS[name](**args)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batches=st.lists(st.lists(commands, min_size=1, max_size=4), min_size=1, max_size=25))
def test_state_rebuilt_from_the_log_equals_live_state(new_store, batches):
    url = new_store()
    clock = VirtualClock()
    runtime = runtime_on(url, CONFIG, clock)
    for batch in batches:
        pending = []
        for name, args in batch:
            if name == "advance":
                clock.advance(args)
                continue
            command = _command(runtime, name, args)
            if command is not None:
                pending.append(command)
        runtime.execute_batch(pending)
    rebuilt = SchedulerState(CONFIG.task_ttl_s)
    for position, event in runtime.log.iter_events():
        rebuilt.apply(event, position)
    assert rebuilt.snapshot() == runtime.state.snapshot()
    # A second runtime started on the same log agrees too.
    restarted = runtime_on(url, CONFIG, clock)
    assert restarted.state.snapshot() == runtime.state.snapshot()
    runtime.log.close()
    restarted.log.close()
