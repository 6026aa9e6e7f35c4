"""The bench's fleet and workload: a runtime on a fresh log with healthy endpoints and
idle agents, and the timed loop of submissions that each commit's pass assigns. Shared
by the SQLite and PostgreSQL figures (``bench``, ``bench_postgres``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from tierlog.adapters import bootstrap
from tierlog.adapters.runtime.writer import SchedulerRuntime
from tierlog.adapters.settings import Settings
from tierlog.domain import commands as cmd


def submit_command(spec: dict[str, Any]) -> cmd.SubmitTask:
    """The submit command of one of ``SPECS``."""
    return cmd.SubmitTask(**spec)


def _register(agent_id: str) -> cmd.RegisterAgent:
    return cmd.RegisterAgent(agent_id=agent_id, capabilities=("python",))


_HOSTS = ("gpu-a", "gpu-b", "gpu-c")
_ENDPOINT_SETUP: list[cmd.Command] = [
    *(cmd.RegisterEndpoint(host=host, models=("llama3:8b",)) for host in _HOSTS),
    *(cmd.ReportHealth(endpoint_id=f"{host}:11434", ok=True) for host in _HOSTS),
]


SPECS = (
    {"description": "fix typo in README", "priority": "low"},
    {
        "description": "add pagination to the list endpoint and document the cursor",
        "file_hints": ["api.py"],
        "needed_capabilities": ["python"],
    },
    {"description": "refactor the storage layer", "priority": "high"},
)
"""The bench's tasks, in turn: one of each tier."""


def fleet_on(settings: Settings, agents: int) -> SchedulerRuntime:
    """A started runtime on the fresh log of ``settings`` with three healthy endpoints
    and ``agents`` idle agents, built as ``tierlog serve`` builds it."""
    runtime = bootstrap.build_runtime(settings, bootstrap.open_log(settings))
    runtime.start()
    add_fleet(runtime, agents)
    return runtime


def add_fleet(runtime: SchedulerRuntime, agents: int) -> None:
    """Give a started runtime three healthy endpoints (every tier routes) and ``agents``
    idle agents that know Python, in commits of at most 1,000 agents."""
    runtime.execute_batch(_ENDPOINT_SETUP)
    for i in range(0, agents, 1000):
        runtime.execute_batch([_register(f"agent-{j}") for j in range(i, min(agents, i + 1000))])


def time_submissions(runtime: SchedulerRuntime, tasks: int, batch: int) -> tuple[float, int]:
    """Submit ``tasks`` tasks in group commits of ``batch`` (each assigned in its own
    commit's pass); the seconds it took and the events appended. Raises if a task was
    left unassigned: the figure would not be submit->assigned."""
    head = runtime.log.head()
    specs = [SPECS[i % len(SPECS)] for i in range(tasks)]
    started = time.perf_counter()
    for i in range(0, tasks, batch):
        # Commands are built (and validated) inside the timing, as at the HTTP edge.
        runtime.execute_batch([submit_command(spec) for spec in specs[i : i + batch]])
    elapsed = time.perf_counter() - started
    assigned = sum(1 for t in runtime.state.tasks.values() if t.state == "assigned")
    if assigned != tasks:
        raise RuntimeError(f"bench: only {assigned} of {tasks} tasks were assigned")
    return elapsed, runtime.log.head() - head


def submit_figures(
    runs: tuple[int, int, int],
    rates: Sequence[float],
    raw: Sequence[float],
    events_per_task: Sequence[float],
    baseline: str,
) -> dict[str, Any]:
    """The submit->assigned figures of ``runs`` (tasks, batch, repeats): medians of our
    ``rates`` and of the ``raw`` baseline's (tasks/s, named ``baseline``), and of the
    runs' ratios, each ratio taken within its own run."""
    tasks, batch, repeats = runs
    ratios = [ours / base for ours, base in zip(rates, raw, strict=True)]
    return {
        "tasks": tasks,
        "batch": batch,
        "repeats": repeats,
        "events_per_task": round(statistics.median(events_per_task), 2),
        "tasks_per_s_median": round(statistics.median(rates)),
        f"raw_{baseline}_equivalent_tasks_per_s_median": round(statistics.median(raw)),
        "ratio_median": round(statistics.median(ratios), 3),
        "ratios": [round(x, 3) for x in ratios],
    }
