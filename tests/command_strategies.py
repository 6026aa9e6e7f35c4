"""Random command sequences for the property tests over the runtime: hypothesis
strategies of commands, and how one becomes a ``Command`` against a runtime's state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from hypothesis import strategies as st

from tierlog.adapters.runtime.writer import SchedulerRuntime
from tierlog.domain import commands as cmd
from tierlog.domain.clock import VirtualClock
from tierlog.domain.commands import COMMANDS
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import ValidationError
from tierlog.domain.service import SubmitResult

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


register_agent = st.tuples(
    st.just("register_agent"),
    st.fixed_dictionaries(
        {
            "agent_id": agent_ids,
            "capabilities": st.lists(st.sampled_from(["python", "rust"]), max_size=2),
            "ollama_host": st.sampled_from([None, *HOSTS]),
        }
    ),
)
commands = st.one_of(
    register_agent,
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
    report_health := st.tuples(
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
    submit_task := st.tuples(
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
    agent_report := st.tuples(
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
    retry_task := st.tuples(st.just("retry_task"), st.fixed_dictionaries({"task": _task_index()})),
    advance := st.tuples(st.just("advance"), st.sampled_from([0.5, 4.0, 5.0, 61.0, 301.0])),
)


BATCHES = st.lists(st.lists(commands, min_size=1, max_size=4), min_size=1, max_size=25)
"""Batches of commands (and clock advances), as the runtime's group commits take them."""

BUSY_BATCHES = st.lists(
    st.lists(
        st.one_of(commands, register_agent, submit_task, agent_report, advance, retry_task),
        min_size=2,
        max_size=6,
    ),
    min_size=15,
    max_size=40,
)
"""Longer batches, weighted to the life of tasks (submitted, done, time passing): the
law about records leaving memory needs many of them to settle."""


def command_for(
    runtime: SchedulerRuntime, name: str, args: Any, gone: Sequence[UUID] = ()
) -> cmd.Command | None:
    """The command, or None when there is none to give or its input is invalid (a bad
    command is refused when it is built, before it reaches the runtime). ``gone`` are
    tasks that left the runtime's memory: commands may name them too."""
    try:
        return _build(runtime, name, args, gone)
    except ValidationError:
        return None


def _build(
    runtime: SchedulerRuntime, name: str, args: Any, gone: Sequence[UUID]
) -> cmd.Command | None:
    tasks = list(runtime.state.tasks.values())
    wanted = {"agent_report": "assigned", "retry_task": "dead_lettered", "cancel_task": "queued"}
    if name in wanted:
        # Prefer tasks the command can apply to, so the valid paths are exercised too;
        # one that left memory when the index falls past them.
        fit = [t for t in tasks if t.state == wanted[name]] or tasks
        index = args["task"]
        if index >= len(fit) and gone:
            return _late(name, args, gone[index % len(gone)])
        if not fit:
            return None
        task = fit[index % len(fit)]
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


def _late(name: str, args: Any, task_id: UUID) -> cmd.Command:
    """A command naming a task that left memory: a retry or cancel of a dead letter, or
    an agent's late report (refused either way, the same as before it left)."""
    if name != "agent_report":
        return COMMANDS[name](task_id=task_id)
    verb = {"complete": "complete_task", "fail": "fail_task", "heartbeat": "heartbeat"}
    extra = {"error": "boom"} if args["outcome"] == "fail" else {}
    return COMMANDS[verb[args["outcome"]]](agent_id="a1", task_id=task_id, generation=1, **extra)


def run_batches(runtime: SchedulerRuntime, clock: VirtualClock, batches: Any) -> None:
    """Run the generated batches as group commits (advancing ``clock`` where told),
    between batches as the background writer does; commands may name tasks that left
    the runtime's memory."""
    submitted: list[UUID] = []
    for batch in batches:
        gone = [task_id for task_id in submitted if task_id not in runtime.state.tasks]
        pending = []
        for name, args in batch:
            if name == "advance":
                clock.advance(args)
                continue
            command = command_for(runtime, name, args, gone)
            if command is not None:
                pending.append(command)
        for result in runtime.execute_batch(pending):
            if isinstance(result, SubmitResult) and result.created:
                submitted.append(result.task_id)
        runtime.housekeep()
