"""Two OS processes scheduling one log: no task assigned twice, no timer fired twice;
and many processes starting on one new store at the same moment all start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tierlog.adapters.readside.read_store import ReadStore
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import events as ev
from tierlog.domain.state import SchedulerState

TASKS = 1000
WORKER = Path(__file__).with_name("fleet_worker.py")
STARTER = Path(__file__).with_name("startup_worker.py")


def _run_workers(url: str) -> list[dict]:
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), url, name, str(TASKS), submit, "150"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, submit in (("p1", "1"), ("p2", "0"))
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    return outputs


def _check_log(url: str) -> dict[str, int]:
    log = EventLog(url)
    assignments: dict[object, list[int]] = defaultdict(list)
    completions: Counter[object] = Counter()
    timer_ends: Counter[object] = Counter()
    timer_starts: Counter[object] = Counter()
    fires: Counter[object] = Counter()
    holding: dict[str, object] = {}
    state = SchedulerState()
    for position, event in log.iter_events():
        match event:
            case ev.TaskAssigned():
                gens = assignments[event.originator_id]
                assert not gens or event.generation > gens[-1], "task assigned twice"
                gens.append(event.generation)
            case ev.AgentReserved():
                assert event.agent_id not in holding, "agent given two tasks at once"
                holding[event.agent_id] = event.task_id
            case ev.TaskCompleted():
                completions[event.originator_id] += 1
                holding.pop(event.agent_id, None)
            case ev.FallbackTimerStarted():
                assert timer_starts[event.task_id] == timer_ends[event.task_id], "two timers"
                timer_starts[event.task_id] += 1
            case ev.FallbackTimerFired() | ev.FallbackTimerCancelled():
                timer_ends[event.task_id] += 1
                assert timer_ends[event.task_id] == timer_starts[event.task_id], "timer ended twice"
                if isinstance(event, ev.FallbackTimerFired):
                    fires[event.task_id] += 1
        state.apply(event, position)
    log.close()
    assert len(completions) == TASKS and set(completions.values()) == {1}
    assert all(t.state == "completed" for t in state.tasks.values())
    assert max(fires.values(), default=0) <= 1
    return {"assignments": sum(map(len, assignments.values())), "fires": sum(fires.values())}


@pytest.mark.slow
def test_two_processes_never_double_assign_or_double_fire(store_url):
    outputs = _run_workers(store_url)
    figures = _check_log(store_url)
    assert figures["fires"] > 0, "the test must exercise timer fires"
    assert all(o["completed"] == TASKS for o in outputs)
    print(outputs, figures)


def test_processes_starting_together_on_a_new_store_all_start(store_url):
    """Three processes of two threads each build and start a whole system on the same
    new store at the same moment (tables, types, triggers, read models created by
    whoever comes first), then each submits a task: every one starts and submits."""
    processes, threads = 3, 2
    # Small connection pools: six systems must fit the server's connections beside
    # whatever else runs on it (eventsourcing opens five per log by default).
    environ = {**os.environ, "POSTGRES_POOL_SIZE": "1", "POSTGRES_MAX_OVERFLOW": "4"}
    start_at = time.time() + 2.0  # past every interpreter's start-up
    procs = [
        subprocess.Popen(
            [sys.executable, str(STARTER), store_url, str(threads), str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environ,
        )
        for _ in range(processes)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert [o["errors"] for o in outputs] == [[]] * processes
    log = EventLog(store_url)
    try:
        submitted = sum(isinstance(e, ev.TaskSubmitted) for _, e in log.iter_events())
        store = ReadStore(log)
        try:
            tasks = store.query("SELECT COUNT(*) FROM rm_tasks")[0][0]
        finally:
            store.close()
    finally:
        log.close()
    assert submitted == processes * threads
    assert tasks == processes * threads
