"""A growing backlog: batches of submissions decided and appended in one commit each,
with the queue only growing. Either during an outage (no endpoint can route the
standard tier: a pass starts timers for the new tasks), or, with ``idle_agents``, with
every tier healthy and idle agents that lack the capability every task needs (a pass
looks for an agent and finds none). Neither pass may cost more as the backlog grows
(``domain/queue_indexes.py``, ``domain/scheduling.py``). ``scripts/bench_backlog.py``
runs it."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from tierlog.adapters import bootstrap
from tierlog.adapters.settings import Settings
from tierlog.adapters.tools.bench_fleet import add_fleet
from tierlog.domain import commands as cmd


def run_backlog_bench(batches: int = 60, batch: int = 1000, idle_agents: int = 0) -> dict[str, Any]:
    """Milliseconds per commit of ``batch`` submissions, at each tenth of the run: during
    an outage, or (``idle_agents`` > 0) beside idle agents that cannot take them."""
    needed = ("gpu",) if idle_agents else ()
    with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp:
        settings = Settings(store=f"sqlite:///{Path(tmp) / 'log.db'}")
        log = bootstrap.open_log(settings)
        runtime = bootstrap.build_runtime(settings, log, long_running=True)
        runtime.start()
        try:
            if idle_agents:
                add_fleet(runtime, idle_agents)  # they know Python; the tasks need a GPU
            took_ms: list[float] = []
            for n in range(batches):
                commands = [
                    cmd.SubmitTask(description=f"task {n}-{k}", needed_capabilities=needed)
                    for k in range(batch)
                ]
                started = time.perf_counter()
                runtime.execute_batch(commands)
                took_ms.append((time.perf_counter() - started) * 1000)
        finally:
            runtime.stop()
            log.close()
    step = max(1, batches // 10)
    return {
        "batch": batch,
        "idle_agents": idle_agents,
        "ms_per_commit_at_queued": {
            str((n + 1) * batch): round(took_ms[n], 1) for n in range(0, batches, step)
        },
        "first_tenth_ms_median": round(sorted(took_ms[:step])[step // 2], 1),
        "last_tenth_ms_median": round(sorted(took_ms[-step:])[step // 2], 1),
    }
