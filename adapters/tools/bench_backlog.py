"""A backlog during an outage: batches of submissions decided and appended in one commit
each while no endpoint can route the standard tier, so the queue only grows. A pass then
starts timers for the new tasks; it must not cost more as the backlog grows
(``domain/queue_indexes.py``). ``scripts/bench_backlog.py`` runs it."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from tierlog.adapters import bootstrap
from tierlog.adapters.settings import Settings
from tierlog.domain import commands as cmd


def run_backlog_bench(batches: int = 60, batch: int = 1000) -> dict[str, Any]:
    """Milliseconds per commit of ``batch`` submissions, at each tenth of the run."""
    with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp:
        settings = Settings(store=f"sqlite:///{Path(tmp) / 'log.db'}")
        log = bootstrap.open_log(settings)
        runtime = bootstrap.build_runtime(settings, log, long_running=True)
        runtime.start()
        try:
            took_ms: list[float] = []
            for n in range(batches):
                commands = [cmd.SubmitTask(description=f"task {n}-{k}") for k in range(batch)]
                started = time.perf_counter()
                runtime.execute_batch(commands)
                took_ms.append((time.perf_counter() - started) * 1000)
        finally:
            runtime.stop()
            log.close()
    step = max(1, batches // 10)
    return {
        "batch": batch,
        "ms_per_commit_at_queued": {
            str((n + 1) * batch): round(took_ms[n], 1) for n in range(0, batches, step)
        },
        "first_tenth_ms_median": round(sorted(took_ms[:step])[step // 2], 1),
        "last_tenth_ms_median": round(sorted(took_ms[-step:])[step // 2], 1),
    }
