"""``tierlog bench --audit``: audit throughput and memory, and ``at`` latency, on a large
generated log (1,000,000 events by default). Each audit part is timed on its own."""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from adapters.clock import SystemClock
from adapters.event_log import EventLog
from adapters.projection_runner import ProjectionRunner
from adapters.runtime import Command, SchedulerRuntime
from domain.config import SchedulerConfig
from domain.service import SchedulerService
from domain.unit_of_work import UnitOfWork

_AUDIT_CHILD = """
import json, resource, sys, time
from adapters.audit import audit
from adapters.event_log import EventLog
from adapters.projection_runner import ProjectionRunner
log = EventLog(sys.argv[1])
started = time.perf_counter()
report = audit(log)
elapsed = time.perf_counter() - started
print(json.dumps({"events": report.events, "seconds": elapsed, "clean": report.clean,
                  "timings": report.timings,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


_KINDS = ("fix typo in README", "add tests for the parser module", "refactor the storage")


def _submitter(i: int) -> Command:
    def command(service: SchedulerService, uow: UnitOfWork, now: Any) -> Any:
        tier = ("trivial", "complex")[i % 2]
        return service.submit_task(uow, now, description=_KINDS[i % 3], complexity_tier=tier)

    return command


def _completer(agent_id: str, task_id: Any, generation: Any) -> Command:
    def command(service: SchedulerService, uow: UnitOfWork, now: Any) -> Any:
        return service.complete_task(
            uow, now, agent_id=agent_id, task_id=task_id, generation=generation
        )

    return command


def make_log(url: str, events: int, agents: int = 1000) -> int:
    """Fill a fresh log with about ``events`` events of realistic traffic; returns the head."""
    log = EventLog(url)
    runtime = SchedulerRuntime(log, SchedulerConfig(), SystemClock())

    def register(service: SchedulerService, uow: UnitOfWork, now: Any) -> None:
        for n in range(agents):
            service.register_agent(uow, now, agent_id=f"agent-{n}")

    runtime.execute_batch([register])
    n = 0
    while log.head() < events:
        runtime.execute_batch([_submitter(i) for i in range(n, n + agents)])
        n += agents
        held = [
            (a.agent_id, a.task_id, a.generation)
            for a in runtime.state.agents.values()
            if a.status == "busy"
        ]
        runtime.execute_batch([_completer(*h) for h in held])
    head = log.head()
    log.close()
    return head


def run_audit_bench(events: int = 1_000_000, workdir: str | None = None) -> dict[str, Any]:
    """Generate the log, audit it in a child process (for its own peak memory), time ``at``."""
    from adapters.checkpoints import state_at

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        url = f"sqlite:///{Path(tmp) / 'big.db'}"
        started = time.perf_counter()
        head = make_log(url, events)
        generated = time.perf_counter() - started
        runner = ProjectionRunner(EventLog(url))
        started = time.perf_counter()
        runner.run_until_caught_up()  # live read models, which the audit compares
        projected = time.perf_counter() - started
        runner.close()
        done = subprocess.run(
            [sys.executable, "-c", _AUDIT_CHILD, url], capture_output=True, text=True, check=True
        )
        import json

        audit = json.loads(done.stdout.strip().splitlines()[-1])
        log = EventLog(url)
        state_at(log, head)  # the first long fold leaves checkpoints behind
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            state_at(log, head // 2 + 7)
            timings.append(time.perf_counter() - started)
        log.close()
    timings.sort()
    return {
        "events": head,
        "generate_seconds": round(generated, 1),
        "project_events_per_s": round(head / projected),
        "audit_events_per_s": round(audit["events"] / audit["seconds"]),
        "audit_parts_seconds": audit["timings"],
        "audit_clean": audit["clean"],
        "audit_peak_rss_mb": round(audit["peak_rss_mb"], 1),
        "at_middle_seconds_median": round(timings[len(timings) // 2], 3),
        "bench_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
