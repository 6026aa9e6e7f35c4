"""``tierlog bench --audit``: audit throughput and memory, and ``at`` latency, on a large
generated log (1,000,000 events by default). Each audit part is timed on its own."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tierlog.adapters import bootstrap
from tierlog.adapters.settings import Settings
from tierlog.domain import commands as cmd
from tierlog.domain.clock import VirtualClock

# One audit in a fresh process, so its peak memory (and its workers') is its own. The
# peak is VmHWM, which starts again at exec; ru_maxrss would carry over the forking
# parent's (this bench holds the log's whole state). The workers' figure is their
# ru_maxrss, an upper bound for the same reason.
_AUDIT_CHILD = """
import json, resource, sys, time
from tierlog.adapters.audit.run import audit
from tierlog.adapters.store.event_log import EventLog

def vm_hwm_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

log = EventLog(sys.argv[1], read_only=True)
started = time.perf_counter()
report = audit(log, full=sys.argv[2] == "full")
elapsed = time.perf_counter() - started
print(json.dumps({"events": report.events, "seconds": elapsed, "clean": report.clean,
                  "resumed_from": report.resumed_from, "sealed_at": report.sealed_at,
                  "timings": report.timings, "workers": report.workers,
                  "peak_rss_mb": vm_hwm_mb(),
                  "worker_peak_rss_mb":
                      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def _audit_once(url: str, mode: str = "full") -> dict[str, Any]:
    """One audit (``mode``: "full", or "incremental" from the seal) in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _AUDIT_CHILD, url, mode], capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


_KINDS: tuple[tuple[str, cmd.RequestedTier], ...] = (
    ("fix typo in README", "trivial"),
    ("add tests for the parser module", "standard"),
    ("refactor the storage layer", "complex"),
)
_ENDPOINTS = 3
# Every so many rounds the ollama endpoints go down: standard tasks start timers, which
# fire and escalate them (a long outage) or are cancelled when the endpoints recover.
_OUTAGE_EVERY = 10
_FAIL_EVERY = 25  # one held task in so many fails (and is requeued) instead of completing


def _submitter(i: int) -> cmd.SubmitTask:
    description, tier = _KINDS[i % len(_KINDS)]
    return cmd.SubmitTask(description=description, complexity_tier=tier, repo=f"repo-{i % 7}")


def _finisher(n: int, agent_id: str, task_id: Any, generation: Any) -> cmd.Command:
    if n % _FAIL_EVERY == 0:
        return cmd.FailTask(agent_id=agent_id, task_id=task_id, generation=generation, error="boom")
    return cmd.CompleteTask(agent_id=agent_id, task_id=task_id, generation=generation)


def _health(ok: bool) -> list[cmd.Command]:
    return [cmd.ReportHealth(endpoint_id=f"ollama-{e}:11434", ok=ok) for e in range(_ENDPOINTS)]


class LogFiller:
    """Appends a realistic mix to a fresh log, on a virtual clock: every tier, ollama
    routing with scored candidates, endpoint outages that start fallback timers (which
    fire or are cancelled), failures and requeues; ``fill`` may be called again to
    append more (the re-audit's new events)."""

    def __init__(self, url: str, agents: int = 1000) -> None:
        settings = Settings(store=url)
        self.log = bootstrap.open_log(settings)
        self.clock = VirtualClock()
        self.runtime = bootstrap.build_runtime(settings, self.log, clock=self.clock)
        self.runtime.start()
        self.agents = agents
        self.submitted = self.finished = self.rounds = 0
        self.runtime.execute_batch(
            [
                *(
                    cmd.RegisterEndpoint(host=f"ollama-{e}", models=("llama3:8b",))
                    for e in range(_ENDPOINTS)
                ),
                *(cmd.RegisterAgent(agent_id=f"agent-{n}") for n in range(agents)),
            ]
        )
        self.runtime.execute_batch(_health(True))

    def fill(self, events: int) -> int:
        """Append rounds until the log holds at least ``events``; the head."""
        runtime, clock, agents = self.runtime, self.clock, self.agents
        wait = runtime.config.fallback_wait_s
        while self.log.head() < events:
            self.rounds += 1
            outage = self.rounds % _OUTAGE_EVERY == 0
            if outage:
                for _ in range(runtime.config.health_failures_to_unhealthy):
                    runtime.execute_batch(_health(False))
            start = self.submitted
            runtime.execute_batch([_submitter(i) for i in range(start, start + agents)])
            self.submitted += agents
            # Every other outage ends inside the wait (timers cancelled), the rest after it.
            long_outage = self.rounds % (2 * _OUTAGE_EVERY) == 0
            clock.advance((wait + 1 if long_outage else wait / 2) if outage else 1.0)
            if outage:
                runtime.execute_batch(_health(True))
            held = [
                (a.agent_id, a.task_id, a.generation)
                for a in runtime.state.agents.values()
                if a.status == "busy"
            ]
            runtime.execute_batch([_finisher(self.finished + k, *h) for k, h in enumerate(held)])
            self.finished += len(held)
        return self.log.head()

    def close(self) -> None:
        """Stop the runtime and close the log."""
        self.runtime.stop()
        self.log.close()


def make_log(url: str, events: int, agents: int = 1000) -> int:
    """Fill a fresh log with about ``events`` events (see ``LogFiller``); the head."""
    filler = LogFiller(url, agents)
    try:
        return filler.fill(events)
    finally:
        filler.close()


# New events before each re-audit, and how many re-audits the median is of.
REAUDIT_EVENTS = 10_000
REAUDITS = 3


def run_audit_bench(
    events: int = 1_000_000, workdir: str | None = None, repeats: int = 3
) -> dict[str, Any]:
    """Generate the log, audit it in full ``repeats`` times (each in a fresh process, for
    its own peak memory), time ``at`` at the middle of the log, then append
    ``REAUDIT_EVENTS`` events (a tenth of a smaller log) and audit again from the seal,
    ``REAUDITS`` times."""
    from tierlog.adapters.history.checkpoints import state_at

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        url = f"sqlite:///{Path(tmp) / 'big.db'}"
        started = time.perf_counter()
        filler = LogFiller(url)
        try:
            head = filler.fill(events)
            generated = time.perf_counter() - started
            settings = Settings(store=url)
            runner = bootstrap.build_runner(settings, filler.log)
            runner.start()
            started = time.perf_counter()
            runner.run_until_caught_up()  # live read models, which the audit compares
            projected = time.perf_counter() - started
            audits = [_audit_once(url) for _ in range(repeats)]
            state_at(filler.log, head)  # the first long fold leaves checkpoints behind
            timings = []
            for _ in range(5):
                started = time.perf_counter()
                state_at(filler.log, head // 2 + 7)
                timings.append(time.perf_counter() - started)
            reaudits = []
            for _ in range(REAUDITS):
                filler.fill(filler.log.head() + min(REAUDIT_EVENTS, head // 10))
                runner.run_until_caught_up()
                reaudits.append(_audit_once(url, "incremental"))
            runner.close()
        finally:
            filler.close()
    figures = _figures(head, generated, projected, audits, timings, reaudits)
    figures["reaudit_new_events"] = min(REAUDIT_EVENTS, head // 10)
    return figures


def _figures(
    head: int,
    generated: float,
    projected: float,
    audits: list[dict[str, Any]],
    timings: list[float],
    reaudits: list[dict[str, Any]],
) -> dict[str, Any]:
    timings.sort()
    rates = sorted(a["events"] / a["seconds"] for a in audits)
    median = audits[[a["events"] / a["seconds"] for a in audits].index(rates[len(rates) // 2])]
    main_peak = max(a["peak_rss_mb"] for a in audits)
    worker_peak = max(a["worker_peak_rss_mb"] for a in audits)
    again = sorted(a["seconds"] for a in reaudits)
    return {
        "events": head,
        "generate_seconds": round(generated, 1),
        "project_events_per_s": round(head / projected),
        "audit_events_per_s_median": round(rates[len(rates) // 2]),
        "audit_events_per_s_runs": [round(r) for r in rates],
        "audit_parts_seconds_of_median_run": median["timings"],
        # What one process does before any check: read the rows, verify the chain and
        # decode. No split of the audit can run faster than this in the process that
        # decodes everything; the median run's figure.
        "read_chain_decode_events_per_s": round(
            head / sum(median["timings"][f"replay_{part}"] for part in ("read", "chain", "decode"))
        ),
        "audit_clean": all(a["clean"] for a in audits),
        "audit_peak_rss_mb": round(main_peak, 1),
        "audit_worker_peak_rss_mb": round(worker_peak, 1),
        "audit_workers": median["workers"],
        # Each process's peak, added up: an upper bound of what the audit held at once.
        "audit_all_processes_peak_rss_mb_bound": round(
            main_peak + median["workers"] * worker_peak, 1
        ),
        "at_middle_seconds_median": round(timings[len(timings) // 2], 3),
        # An audit from the seal the previous one left, after ``reaudit_new_events``
        # (the whole chain verified, the rest checked from the seal); median, and runs.
        "reaudit_s": round(again[len(again) // 2], 2),
        "reaudit_s_runs": [round(a, 2) for a in again],
        "reaudit_clean_and_resumed": all(
            a["clean"] and a["resumed_from"] is not None for a in reaudits
        ),
        "reaudit_parts_seconds_of_median_run": reaudits[
            [a["seconds"] for a in reaudits].index(again[len(again) // 2])
        ]["timings"],
        "bench_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
