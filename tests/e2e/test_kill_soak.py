"""kill -9 soak: ``tierlog serve`` killed at random moments, at least ``KILLS`` times,
under concurrent HTTP load (submitters and agents on 127.0.0.1), restarted each time on
the same log. Nothing acknowledged is lost, nothing is assigned twice, the audit is
clean. Bounded in kills and in time (about a minute).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import events as ev

KILLS = 12
AGENTS = 4
SUBMITTERS = 2
TIME_LIMIT_S = 100.0


def _audit(store: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("tierlog"))
    return subprocess.run(
        [exe, "audit", "--store", store], capture_output=True, text=True, timeout=120
    )


def _stored(store: str) -> tuple[set[str], set[tuple[str, int]], list[tuple[str, int]]]:
    log = EventLog(store)
    submitted, completed, assigned = set(), set(), []
    try:
        for _, event in log.iter_events():
            task = str(event.originator_id)
            if isinstance(event, ev.TaskSubmitted):
                submitted.add(task)
            elif isinstance(event, ev.TaskCompleted):
                completed.add((task, event.generation))
            elif isinstance(event, ev.TaskAssigned):
                assigned.append((task, event.generation))
    finally:
        log.close()
    return submitted, completed, assigned


@pytest.mark.slow
def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path, server_factory, fleet):
    store = f"sqlite:///{tmp_path / 'log.db'}"
    output = tmp_path / "serve.log"
    server = server_factory(store, output=output)
    fleet.url = server.url
    with server.client() as admin:
        for i in range(AGENTS):
            answer = admin.post("/v1/agents", json={"agent_id": f"agent-{i}"})
            assert answer.status_code == 201, answer.text
            fleet.tokens[f"agent-{i}"] = answer.json()["token"]
    threads: list[threading.Thread] = [
        threading.Thread(target=fleet.submitter, args=(f"s{i}",)) for i in range(SUBMITTERS)
    ] + [threading.Thread(target=fleet.agent, args=(agent,)) for agent in fleet.tokens]
    for thread in threads:
        thread.start()
    rng = random.Random(10)
    started, kills = time.monotonic(), 0
    try:
        while kills < KILLS and time.monotonic() - started < TIME_LIMIT_S:
            time.sleep(rng.uniform(0.5, 1.5))
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(timeout=10)
            kills += 1
            server = server_factory(store, output=output)
            fleet.url = server.url
        time.sleep(1.0)  # the last server serves a while
    finally:
        fleet.stop.set()
        for thread in threads:
            thread.join(timeout=15)
    server.process.terminate()
    assert server.process.wait(timeout=20) == 0

    assert kills >= 10, f"only {kills} kills within {TIME_LIMIT_S} s"
    assert fleet.refused == []
    assert len(fleet.submitted) > 50 and len(fleet.completed) > 20, "the load made no progress"
    submitted, completed, assigned = _stored(store)
    assert fleet.submitted <= submitted, f"lost tasks: {fleet.submitted - submitted}"
    assert fleet.completed <= completed, f"lost completions: {fleet.completed - completed}"
    assert len(assigned) == len(set(assigned)), "a task generation was assigned twice"
    audit = _audit(store)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    print(
        f"{kills} kills: {len(fleet.submitted)} acknowledged tasks, "
        f"{len(fleet.completed)} acknowledged completions, all in the log; audit clean"
    )
